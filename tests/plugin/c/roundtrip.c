/* SPDX-License-Identifier: MIT
 *
 * roundtrip: plays and captures one ALSA device in one process (a vsnd card
 * is used by one process at a time), as alsabat's loopback mode or
 * jack_iodelay would, for a backend whose capture records what its
 * playback played (pvplug backend --sink loop --source loop).
 *
 *   roundtrip DEVICE SECONDS PERIOD BUFFER PREFIX
 *
 * Both streams S16_LE stereo 48 kHz, RW interleaved, non-blocking, PERIOD
 * and BUFFER frames; one poll() loop serves both.  Playback: the signal
 * below, then silence; it starts full (BUFFER frames of the signal's lead
 * silence) together with the capture, and is kept full, one PERIOD a write.
 * Capture: read a PERIOD whenever one is there, for SECONDS + 1 s.
 *
 * The signal: 0.3 s of silence, then a burst every second: 0.2 s of a
 * rising chirp on the left and seeded white noise on the right (a
 * different seed each burst), faded in and out; silence between.
 *
 * Writes PREFIX.play (what was written, raw frames), PREFIX.cap (what was
 * read, raw frames) and PREFIX.log: little-endian int64 quads (kind, t_ns,
 * frames, delay): kind 0 = after a playback write (frames: the playback
 * stream's appl_ptr, delay: snd_pcm_delay after the write), kind 1 = a
 * capture read (frames: the capture appl_ptr after it, delay:
 * snd_pcm_delay before it), kind 2 = both streams started (t_ns).
 * Prints "roundtrip: ..." with the counts, and any xrun ("xrun playback" /
 * "xrun capture": counted, then the stream prepared and started again, the
 * playback refilled with a buffer of silence; what the log says after it
 * no longer lines up with the signal).  Exit 0; 1 on a failed call; 2 on bad use.
 */
#define _GNU_SOURCE
#include <alsa/asoundlib.h>
#include <math.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RATE 48000
#define CH 2
#define LEAD_FRAMES (RATE * 3 / 10)
#define BURST_FRAMES (RATE / 5)
#define BURST_EVERY RATE

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void fail(const char *what, int err)
{
	fprintf(stderr, "roundtrip: %s: %s\n", what, snd_strerror(err));
	exit(1);
}

static snd_pcm_t *open_stream(const char *dev, snd_pcm_stream_t dir, snd_pcm_uframes_t period,
			      snd_pcm_uframes_t buffer)
{
	snd_pcm_t *pcm;
	snd_pcm_hw_params_t *hw;
	snd_pcm_sw_params_t *sw;
	snd_pcm_uframes_t boundary;
	int err;

	if ((err = snd_pcm_open(&pcm, dev, dir, SND_PCM_NONBLOCK)) < 0)
		fail(dir == SND_PCM_STREAM_PLAYBACK ? "open playback" : "open capture", err);
	snd_pcm_hw_params_alloca(&hw);
	snd_pcm_sw_params_alloca(&sw);
	snd_pcm_hw_params_any(pcm, hw);
	if ((err = snd_pcm_hw_params_set_access(pcm, hw, SND_PCM_ACCESS_RW_INTERLEAVED)) < 0 ||
	    (err = snd_pcm_hw_params_set_format(pcm, hw, SND_PCM_FORMAT_S16_LE)) < 0 ||
	    (err = snd_pcm_hw_params_set_channels(pcm, hw, CH)) < 0 ||
	    (err = snd_pcm_hw_params_set_rate(pcm, hw, RATE, 0)) < 0 ||
	    (err = snd_pcm_hw_params_set_period_size(pcm, hw, period, 0)) < 0 ||
	    (err = snd_pcm_hw_params_set_buffer_size(pcm, hw, buffer)) < 0 ||
	    (err = snd_pcm_hw_params(pcm, hw)) < 0)
		fail("hw_params", err);
	snd_pcm_sw_params_current(pcm, sw);
	snd_pcm_sw_params_get_boundary(sw, &boundary);
	/* started by hand, together; an xrun stops the stream (and is counted) */
	if ((err = snd_pcm_sw_params_set_start_threshold(pcm, sw, boundary)) < 0 ||
	    (err = snd_pcm_sw_params_set_avail_min(pcm, sw, period)) < 0 ||
	    (err = snd_pcm_sw_params(pcm, sw)) < 0)
		fail("sw_params", err);
	return pcm;
}

static uint32_t rng = 1;

static double noise(void)
{
	rng = rng * 1664525u + 1013904223u;
	return ((double)(rng >> 8) / (1 << 24)) * 2 - 1;
}

/* the signal, frames x CH */
static int16_t *make_signal(size_t frames)
{
	int16_t *s = calloc(frames * CH, sizeof(*s));

	for (size_t start = LEAD_FRAMES, k = 0; start + BURST_FRAMES <= frames;
	     start += BURST_EVERY, k++) {
		double phase = 0;

		rng = 12345u + 7919u * (uint32_t)k;
		for (size_t i = 0; i < BURST_FRAMES; i++) {
			double t = (double)i / RATE, dur = (double)BURST_FRAMES / RATE;
			double fade = fmin(1.0, fmin(t, dur - t) / 0.005);
			double f = 300 * exp(log(20.0) * t / dur);  /* 300 Hz .. 6 kHz */

			phase += 2 * M_PI * f / RATE;
			s[(start + i) * CH] = (int16_t)lrint(0.5 * sin(phase) * fade * 32767);
			s[(start + i) * CH + 1] = (int16_t)lrint(0.4 * noise() * fade * 32767);
		}
	}
	return s;
}

static void put_log(FILE *f, int64_t kind, int64_t t, int64_t frames, int64_t delay)
{
	int64_t q[4] = { kind, t, frames, delay };

	if (fwrite(q, sizeof(q), 1, f) != 1) {
		perror("roundtrip: log");
		exit(1);
	}
}

/* an xrun: counted, then the stream goes on (playback refilled with silence) */
static void recover(snd_pcm_t *pcm, int err, const char *what, int *xruns,
		    snd_pcm_uframes_t buffer)
{
	if (err == -EAGAIN)
		return;
	if (err != -EPIPE && err != -ESTRPIPE)
		fail(what, err);
	(*xruns)++;
	printf("xrun %s (%s)\n", what, snd_strerror(err));
	if ((err = snd_pcm_prepare(pcm)) < 0)
		fail("recover: prepare", err);
	if (snd_pcm_stream(pcm) == SND_PCM_STREAM_PLAYBACK) {
		int16_t *zero = calloc(buffer * CH, sizeof(*zero));
		snd_pcm_sframes_t r = snd_pcm_writei(pcm, zero, buffer);

		free(zero);
		if (r < 0)
			fail("recover: refill", (int)r);
	}
	if ((err = snd_pcm_start(pcm)) < 0)
		fail("recover: start", err);
}

int main(int argc, char **argv)
{
	const char *dev;
	double seconds;
	snd_pcm_uframes_t period, buffer;
	snd_pcm_t *play, *cap;
	int16_t *sig, *silence, *rbuf;
	size_t sig_frames, cap_frames, written = 0, got = 0, total_play;
	char path[4096];
	FILE *fplay, *fcap, *flog;
	int xp = 0, xc = 0, err;
	int64_t deadline;

	if (argc != 6) {
		fprintf(stderr, "usage: roundtrip DEVICE SECONDS PERIOD BUFFER PREFIX\n");
		return 2;
	}
	dev = argv[1];
	seconds = atof(argv[2]);
	period = (snd_pcm_uframes_t)atol(argv[3]);
	buffer = (snd_pcm_uframes_t)atol(argv[4]);
	sig_frames = (size_t)(seconds * RATE);
	cap_frames = sig_frames + RATE;
	total_play = cap_frames + buffer;  /* silence after the signal, to the end */
	sig = make_signal(sig_frames);
	silence = calloc(period * CH, sizeof(*silence));
	rbuf = calloc(period * CH, sizeof(*rbuf));
	snprintf(path, sizeof(path), "%s.play", argv[5]);
	fplay = fopen(path, "wb");
	snprintf(path, sizeof(path), "%s.cap", argv[5]);
	fcap = fopen(path, "wb");
	snprintf(path, sizeof(path), "%s.log", argv[5]);
	flog = fopen(path, "wb");
	if (!fplay || !fcap || !flog) {
		perror("roundtrip: output files");
		return 1;
	}

	play = open_stream(dev, SND_PCM_STREAM_PLAYBACK, period, buffer);
	cap = open_stream(dev, SND_PCM_STREAM_CAPTURE, period, buffer);
	if ((err = snd_pcm_prepare(cap)) < 0)
		fail("prepare capture", err);
	/* the playback buffer full of the lead silence, then both started */
	while (written < buffer) {
		snd_pcm_sframes_t r = snd_pcm_writei(play, sig + written * CH, period);

		if (r < 0)
			fail("prefill", (int)r);
		written += (size_t)r;
	}
	fwrite(sig, CH * sizeof(*sig), written, fplay);
	if ((err = snd_pcm_start(cap)) < 0)
		fail("start capture", err);
	if ((err = snd_pcm_start(play)) < 0)
		fail("start playback", err);
	put_log(flog, 2, now_ns(), 0, 0);

	deadline = now_ns() + (int64_t)((seconds + 11) * 1e9);
	while (got < cap_frames) {
		struct pollfd fds[16];
		int np = snd_pcm_poll_descriptors(play, fds, 8);
		int nc = snd_pcm_poll_descriptors(cap, fds + np, 8);
		snd_pcm_sframes_t avail;
		unsigned short rev;

		if (now_ns() > deadline) {
			fprintf(stderr, "roundtrip: stuck: %zu of %zu frames captured\n", got,
				cap_frames);
			return 1;
		}
		if (poll(fds, np + nc, 100) < 0)
			fail("poll", -errno);
		/* what the plugin found on its descriptors (it takes its events there) */
		snd_pcm_poll_descriptors_revents(play, fds, np, &rev);
		snd_pcm_poll_descriptors_revents(cap, fds + np, nc, &rev);
		/* playback: keep it full */
		avail = snd_pcm_avail_update(play);
		if (avail < 0)
			recover(play, (int)avail, "playback", &xp, buffer);
		while (avail >= (snd_pcm_sframes_t)period && written < total_play) {
			const int16_t *src = written + period <= sig_frames ? sig + written * CH
					     : silence;
			snd_pcm_sframes_t r = snd_pcm_writei(play, src, period), d = 0;

			if (r < 0) {
				recover(play, (int)r, "playback", &xp, buffer);
				break;
			}
			fwrite(src, CH * sizeof(*src), (size_t)r, fplay);
			written += (size_t)r;
			avail -= r;
			snd_pcm_delay(play, &d);
			put_log(flog, 0, now_ns(), (int64_t)written, d);
		}
		/* capture: every period there is */
		for (;;) {
			snd_pcm_sframes_t d = 0, r;

			avail = snd_pcm_avail_update(cap);
			if (avail < 0) {
				recover(cap, (int)avail, "capture", &xc, buffer);
				break;
			}
			if (avail < (snd_pcm_sframes_t)period || got >= cap_frames)
				break;
			snd_pcm_delay(cap, &d);
			r = snd_pcm_readi(cap, rbuf, period);
			if (r < 0) {
				recover(cap, (int)r, "capture", &xc, buffer);
				break;
			}
			fwrite(rbuf, CH * sizeof(*rbuf), (size_t)r, fcap);
			got += (size_t)r;
			put_log(flog, 1, now_ns(), (int64_t)got, d);
		}
	}
	snd_pcm_drop(play);
	snd_pcm_drop(cap);
	snd_pcm_close(play);
	snd_pcm_close(cap);
	fclose(fplay);
	fclose(fcap);
	fclose(flog);
	printf("roundtrip: played %zu captured %zu frames; period %lu buffer %lu; xruns playback "
	       "%d capture %d\n", written, got, (unsigned long)period, (unsigned long)buffer, xp,
	       xc);
	return 0;
}
