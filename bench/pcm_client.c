/* pcm_client: small alsa-lib clients for the data-path benchmarks.
 *
 *   pcm_client open DEVICE COUNT
 *       COUNT times: snd_pcm_open(DEVICE, playback) + snd_pcm_close; prints
 *       "open_ms X" per open (the first is the one that starts Python).
 *   pcm_client onewrite DEVICE SECONDS RATE BUFFER OUT
 *       S16_LE stereo at RATE, buffer BUFFER frames, start_threshold =
 *       buffer, stop_threshold = boundary, avail_min = 1, blocking
 *       snd_pcm_writei of ONE frame per call for SECONDS.  After every call
 *       it records (t_ns, frames written, snd_pcm_avail_update()) as three
 *       little-endian int64 to OUT.  Prints one summary line.
 *
 *   pcm_client soak-play DEVICE SECONDS PERIOD
 *       S16_LE stereo 48 kHz, 4 periods of buffer, stop_threshold =
 *       boundary: writes the pattern (below) as fast as the device takes it
 *       for SECONDS, drains; prints frames and the CRC-32 of every byte.
 *   pcm_client soak-capture DEVICE SECONDS PERIOD
 *       the same set-up for capture: reads for SECONDS and checks every frame
 *       against the pattern (the backend's "pattern" source); prints frames,
 *       mismatches and the first one.
 *
 *   pcm_client pace FILE SECONDS PERIOD
 *       The reference for the CPU figure: what aplay costs on a kernel
 *       driver without the driver.  Every PERIOD frames of 48 kHz S16 stereo
 *       a periodic timerfd (the period interrupt) wakes poll(); it reads a
 *       period of FILE and copies it into a 4-period buffer (the driver's
 *       copy).  Three system calls a period, as aplay's poll, writei ioctl
 *       and read.
 *
 * The pattern (alsa_pvplug/backend/io.py pattern_sample): sample of frame i,
 * channel c = ((i * 2654435761 + c * 40503) >> 8) & 0xffff.
 *
 * Exit status 0 unless setup failed (2) or a call failed (1).
 */
#define _GNU_SOURCE
#include <alsa/asoundlib.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "pcm_client: %s: %s\n", what, snd_strerror(err));
	exit(2);
}

static int do_open(const char *dev, int count)
{
	for (int i = 0; i < count; i++) {
		snd_pcm_t *pcm;
		int64_t t0 = now_ns();
		int err = snd_pcm_open(&pcm, dev, SND_PCM_STREAM_PLAYBACK, 0);

		if (err < 0)
			die("snd_pcm_open", err);
		printf("open_ms %.3f\n", (now_ns() - t0) / 1e6);
		fflush(stdout);
		snd_pcm_close(pcm);
	}
	return 0;
}

static int do_onewrite(const char *dev, double seconds, unsigned rate,
		       snd_pcm_uframes_t buffer, const char *out)
{
	snd_pcm_t *pcm;
	snd_pcm_hw_params_t *hw;
	snd_pcm_sw_params_t *sw;
	snd_pcm_uframes_t boundary, period;
	int16_t frame[2] = { 0, 0 };
	int64_t *rec, t_end, n = 0, written = 0, maxavail = 0;
	size_t cap;
	FILE *f;
	int err;

	if ((err = snd_pcm_open(&pcm, dev, SND_PCM_STREAM_PLAYBACK, 0)) < 0)
		die("snd_pcm_open", err);
	snd_pcm_hw_params_alloca(&hw);
	snd_pcm_sw_params_alloca(&sw);
	snd_pcm_hw_params_any(pcm, hw);
	if ((err = snd_pcm_hw_params_set_access(pcm, hw, SND_PCM_ACCESS_RW_INTERLEAVED)) < 0 ||
	    (err = snd_pcm_hw_params_set_format(pcm, hw, SND_PCM_FORMAT_S16_LE)) < 0 ||
	    (err = snd_pcm_hw_params_set_channels(pcm, hw, 2)) < 0 ||
	    (err = snd_pcm_hw_params_set_rate(pcm, hw, rate, 0)) < 0 ||
	    (err = snd_pcm_hw_params_set_buffer_size(pcm, hw, buffer)) < 0 ||
	    (err = snd_pcm_hw_params(pcm, hw)) < 0)
		die("hw_params", err);
	snd_pcm_hw_params_get_period_size(hw, &period, NULL);
	snd_pcm_sw_params_current(pcm, sw);
	snd_pcm_sw_params_get_boundary(sw, &boundary);
	if ((err = snd_pcm_sw_params_set_start_threshold(pcm, sw, buffer)) < 0 ||
	    (err = snd_pcm_sw_params_set_stop_threshold(pcm, sw, boundary)) < 0 ||
	    (err = snd_pcm_sw_params_set_avail_min(pcm, sw, 1)) < 0 ||
	    (err = snd_pcm_sw_params(pcm, sw)) < 0)
		die("sw_params", err);

	cap = (size_t)(seconds * rate * 1.5) + buffer + 1024;
	rec = malloc(cap * 3 * sizeof(*rec));
	if (!rec)
		die("malloc", -ENOMEM);
	t_end = now_ns() + (int64_t)(seconds * 1e9);
	while (now_ns() < t_end && (size_t)n < cap) {
		snd_pcm_sframes_t r = snd_pcm_writei(pcm, frame, 1);
		snd_pcm_sframes_t avail;

		if (r < 0) {
			fprintf(stderr, "pcm_client: writei: %s\n", snd_strerror((int)r));
			return 1;
		}
		written += r;
		avail = snd_pcm_avail_update(pcm);
		if (avail < 0) {
			fprintf(stderr, "pcm_client: avail_update: %s\n", snd_strerror((int)avail));
			return 1;
		}
		if (avail > maxavail)
			maxavail = avail;
		rec[3 * n] = now_ns();
		rec[3 * n + 1] = written;
		rec[3 * n + 2] = avail;
		n++;
	}
	f = fopen(out, "wb");
	if (!f || fwrite(rec, sizeof(*rec) * 3, (size_t)n, f) != (size_t)n)
		die("writing the records", -errno);
	fclose(f);
	printf("onewrite: calls=%lld written=%lld buffer=%lu period=%lu max_avail=%lld\n",
	       (long long)n, (long long)written, (unsigned long)buffer,
	       (unsigned long)period, (long long)maxavail);
	snd_pcm_drop(pcm);
	snd_pcm_close(pcm);
	return 0;
}

static uint16_t pattern(uint64_t frame, unsigned ch)
{
	return (uint16_t)(((frame * 2654435761ULL + ch * 40503ULL) >> 8) & 0xffff);
}

static snd_pcm_t *soak_open(const char *dev, int capture, snd_pcm_uframes_t period)
{
	snd_pcm_t *pcm;
	snd_pcm_hw_params_t *hw;
	snd_pcm_sw_params_t *sw;
	snd_pcm_uframes_t boundary, buffer = 4 * period;
	int err;

	if ((err = snd_pcm_open(&pcm, dev, capture ? SND_PCM_STREAM_CAPTURE :
				SND_PCM_STREAM_PLAYBACK, 0)) < 0)
		die("snd_pcm_open", err);
	snd_pcm_hw_params_alloca(&hw);
	snd_pcm_sw_params_alloca(&sw);
	snd_pcm_hw_params_any(pcm, hw);
	if ((err = snd_pcm_hw_params_set_access(pcm, hw, SND_PCM_ACCESS_RW_INTERLEAVED)) < 0 ||
	    (err = snd_pcm_hw_params_set_format(pcm, hw, SND_PCM_FORMAT_S16_LE)) < 0 ||
	    (err = snd_pcm_hw_params_set_channels(pcm, hw, 2)) < 0 ||
	    (err = snd_pcm_hw_params_set_rate(pcm, hw, 48000, 0)) < 0 ||
	    (err = snd_pcm_hw_params_set_period_size(pcm, hw, period, 0)) < 0 ||
	    (err = snd_pcm_hw_params_set_buffer_size(pcm, hw, buffer)) < 0 ||
	    (err = snd_pcm_hw_params(pcm, hw)) < 0)
		die("hw_params", err);
	snd_pcm_sw_params_current(pcm, sw);
	snd_pcm_sw_params_get_boundary(sw, &boundary);
	if ((err = snd_pcm_sw_params_set_stop_threshold(pcm, sw, boundary)) < 0 ||
	    (err = snd_pcm_sw_params(pcm, sw)) < 0)
		die("sw_params", err);
	return pcm;
}

static int do_soak(const char *dev, double seconds, snd_pcm_uframes_t period, int capture)
{
	snd_pcm_t *pcm = soak_open(dev, capture, period);
	int16_t *buf = malloc(period * 4);
	uint64_t frames = 0, bad = 0, first_bad = 0;
	uLong crc = crc32(0L, Z_NULL, 0);
	int64_t t_end = now_ns() + (int64_t)(seconds * 1e9);

	while (now_ns() < t_end) {
		snd_pcm_sframes_t r;

		if (!capture) {
			for (snd_pcm_uframes_t k = 0; k < period; k++)
				for (unsigned c = 0; c < 2; c++)
					buf[2 * k + c] = (int16_t)pattern(frames + k, c);
			r = snd_pcm_writei(pcm, buf, period);
		} else {
			r = snd_pcm_readi(pcm, buf, period);
		}
		if (r < 0) {
			fprintf(stderr, "pcm_client: %s: %s\n", capture ? "readi" : "writei",
				snd_strerror((int)r));
			return 1;
		}
		if (capture) {
			for (snd_pcm_sframes_t k = 0; k < r; k++)
				for (unsigned c = 0; c < 2; c++)
					if ((uint16_t)buf[2 * k + c] != pattern(frames + (uint64_t)k, c)) {
						if (!bad)
							first_bad = frames + (uint64_t)k;
						bad++;
					}
		} else {
			crc = crc32(crc, (const Bytef *)buf, (uInt)(r * 4));
		}
		frames += (uint64_t)r;
	}
	if (!capture)
		snd_pcm_drain(pcm);
	printf("soak: frames=%llu crc=%08lx mismatches=%llu first_mismatch=%llu\n",
	       (unsigned long long)frames, capture ? 0UL : crc, (unsigned long long)bad,
	       (unsigned long long)first_bad);
	snd_pcm_close(pcm);
	return 0;
}

static int do_pace(const char *path, double seconds, long period)
{
	size_t bytes = (size_t)period * 4;
	char *chunk = malloc(bytes), *ring = calloc(4, bytes);
	struct itimerspec its = {{0, period * 1000000000L / 48000}, {0, 1}};
	struct pollfd pfd;
	uint64_t ticks;
	long done = 0, total = (long)(seconds * 48000);
	FILE *f = fopen(path, "rb");
	int tfd = timerfd_create(CLOCK_MONOTONIC, 0);

	if (!chunk || !ring || !f || tfd < 0 || timerfd_settime(tfd, 0, &its, NULL) < 0) {
		perror("pcm_client pace");
		return 2;
	}
	setvbuf(f, NULL, _IONBF, 0);	/* one read() a period, as aplay's */
	pfd.fd = tfd;
	pfd.events = POLLIN;
	for (long k = 0; done < total; k++) {
		if (poll(&pfd, 1, 1000) != 1 || read(tfd, &ticks, sizeof(ticks)) != sizeof(ticks))
			return 1;
		if (fread(chunk, 1, bytes, f) == 0)
			rewind(f);
		memcpy(ring + (k % 4) * bytes, chunk, bytes);
		done += period;
	}
	printf("paced %ld frames\n", done);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "open"))
		return do_open(argv[2], atoi(argv[3]));
	if (argc == 7 && !strcmp(argv[1], "onewrite"))
		return do_onewrite(argv[2], atof(argv[3]), (unsigned)atoi(argv[4]),
				   (snd_pcm_uframes_t)atol(argv[5]), argv[6]);
	if (argc == 5 && (!strcmp(argv[1], "soak-play") || !strcmp(argv[1], "soak-capture")))
		return do_soak(argv[2], atof(argv[3]), (snd_pcm_uframes_t)atol(argv[4]),
			       !strcmp(argv[1], "soak-capture"));
	if (argc == 5 && !strcmp(argv[1], "pace"))
		return do_pace(argv[2], atof(argv[3]), atol(argv[4]));
	fprintf(stderr, "usage: pcm_client open DEVICE COUNT | pace FILE SECONDS PERIOD | soak-play|soak-capture DEVICE "
		"SECONDS PERIOD | "
		"onewrite DEVICE SECONDS RATE BUFFER OUT\n");
	return 2;
}
