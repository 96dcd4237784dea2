/* SPDX-License-Identifier: MIT
 *
 * pcm_behaviour: drives an ALSA playback PCM (the pvplug plugin) with
 * alsa-lib directly, to test the ioplug behaviours aplay never uses.
 *
 *   pcm_behaviour CMD DEVICE INFILE [WAVDIR]
 *
 * INFILE holds raw S16_LE stereo 48 kHz frames (what the test generates);
 * CMD is one of rewind, drain, pause, xrun, mmap, status.  Each command
 * plays a known part of INFILE and prints what it measured as "key=value"
 * lines on stdout; tests/plugin/test_plugin_alsalib.py compares the backend's WAV
 * with what must have been played and checks the values.  A failed alsa-lib
 * call prints "FAIL: ..." on stderr and exits 1.
 */
#define _GNU_SOURCE
#include <alsa/asoundlib.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define RATE 48000
#define CHANNELS 2
#define FRAME_BYTES 4

static const char *device;
static const char *wavdir;
static unsigned char *data;
static snd_pcm_uframes_t data_frames;

static void fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "FAIL: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	exit(1);
}

#define CHECK(call) do { \
	int _e = (call); \
	if (_e < 0) \
		fail("%s:%d %s: %s", __FILE__, __LINE__, #call, snd_strerror(_e)); \
} while (0)

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (time_t)s) * 1e9) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void load(const char *path)
{
	FILE *f = fopen(path, "rb");
	long size;

	if (!f)
		fail("cannot open %s: %s", path, strerror(errno));
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	fseek(f, 0, SEEK_SET);
	data = malloc(size ? size : 1);
	if (!data || fread(data, 1, size, f) != (size_t)size)
		fail("cannot read %s", path);
	fclose(f);
	data_frames = size / FRAME_BYTES;
}

static void need_frames(snd_pcm_uframes_t n)
{
	if (data_frames < n)
		fail("INFILE has %lu frames, this command needs %lu", data_frames, n);
}

static const unsigned char *frames_at(snd_pcm_uframes_t pos)
{
	return data + pos * FRAME_BYTES;
}

struct geometry {
	snd_pcm_uframes_t buffer, period;
};

/* Open DEVICE for playback with exactly this geometry; start_threshold 0
 * keeps alsa-lib's default. */
static snd_pcm_t *open_pcm(snd_pcm_access_t access, snd_pcm_uframes_t buffer,
			   snd_pcm_uframes_t period, snd_pcm_uframes_t start_threshold,
			   struct geometry *g, int *can_pause)
{
	snd_pcm_t *pcm;
	snd_pcm_hw_params_t *hw;
	snd_pcm_sw_params_t *sw;
	unsigned int rate = RATE;

	CHECK(snd_pcm_open(&pcm, device, SND_PCM_STREAM_PLAYBACK, 0));
	snd_pcm_hw_params_alloca(&hw);
	CHECK(snd_pcm_hw_params_any(pcm, hw));
	CHECK(snd_pcm_hw_params_set_access(pcm, hw, access));
	CHECK(snd_pcm_hw_params_set_format(pcm, hw, SND_PCM_FORMAT_S16_LE));
	CHECK(snd_pcm_hw_params_set_channels(pcm, hw, CHANNELS));
	CHECK(snd_pcm_hw_params_set_rate(pcm, hw, rate, 0));
	CHECK(snd_pcm_hw_params_set_period_size(pcm, hw, period, 0));
	CHECK(snd_pcm_hw_params_set_buffer_size(pcm, hw, buffer));
	CHECK(snd_pcm_hw_params(pcm, hw));
	CHECK(snd_pcm_hw_params_get_buffer_size(hw, &g->buffer));
	CHECK(snd_pcm_hw_params_get_period_size(hw, &g->period, NULL));
	if (can_pause)
		*can_pause = snd_pcm_hw_params_can_pause(hw);

	snd_pcm_sw_params_alloca(&sw);
	CHECK(snd_pcm_sw_params_current(pcm, sw));
	CHECK(snd_pcm_sw_params_set_avail_min(pcm, sw, g->period));
	if (start_threshold)
		CHECK(snd_pcm_sw_params_set_start_threshold(pcm, sw, start_threshold));
	CHECK(snd_pcm_sw_params(pcm, sw));
	printf("buffer=%lu\nperiod=%lu\n", g->buffer, g->period);
	return pcm;
}

/* Blocking writei of every frame in [pos, pos + n). */
static void write_all(snd_pcm_t *pcm, snd_pcm_uframes_t pos, snd_pcm_uframes_t n)
{
	while (n > 0) {
		snd_pcm_sframes_t r = snd_pcm_writei(pcm, frames_at(pos), n);

		if (r < 0)
			fail("writei at frame %lu: %s (state %s)", pos, snd_strerror(r),
			     snd_pcm_state_name(snd_pcm_state(pcm)));
		pos += r;
		n -= r;
	}
}

struct st {
	snd_pcm_state_t state;
	snd_pcm_sframes_t avail, delay;
};

static struct st status(snd_pcm_t *pcm)
{
	snd_pcm_status_t *s;
	struct st out;

	snd_pcm_status_alloca(&s);
	CHECK(snd_pcm_status(pcm, s));
	out.state = snd_pcm_status_get_state(s);
	out.avail = (snd_pcm_sframes_t)snd_pcm_status_get_avail(s);
	out.delay = snd_pcm_status_get_delay(s);
	return out;
}

/* Size in bytes of the newest .wav in WAVDIR (-1 without WAVDIR). */
static long newest_wav_size(void)
{
	DIR *d;
	struct dirent *e;
	long size = -1;
	char best[512] = "";

	if (!wavdir)
		return -1;
	d = opendir(wavdir);
	if (!d)
		fail("cannot open %s", wavdir);
	while ((e = readdir(d)) != NULL) {
		size_t len = strlen(e->d_name);

		if (len > 4 && !strcmp(e->d_name + len - 4, ".wav") &&
		    strcmp(e->d_name, best) > 0)
			snprintf(best, sizeof(best), "%s", e->d_name);
	}
	closedir(d);
	if (best[0]) {
		char path[1024];
		struct stat sb;

		snprintf(path, sizeof(path), "%s/%s", wavdir, best);
		if (stat(path, &sb) == 0)
			size = sb.st_size;
	}
	return size;
}

/* --- rewind --------------------------------------------------------------
 * 0.5 s into a 1 s buffer, start, rewind 0.25 s, write 0.25 s of new data:
 * the backend must play data[0:N-M] + data[N:N+M]. */
static int cmd_rewind(void)
{
	const snd_pcm_uframes_t N = RATE / 2, M = RATE / 4;
	struct geometry g;
	snd_pcm_t *pcm;
	snd_pcm_sframes_t rewindable, rewound, after;

	need_frames(N + M);
	pcm = open_pcm(SND_PCM_ACCESS_RW_INTERLEAVED, RATE, RATE / 10, RATE, &g, NULL);
	write_all(pcm, 0, N);
	CHECK(snd_pcm_start(pcm));
	rewindable = snd_pcm_rewindable(pcm);
	if (rewindable < 0)
		fail("rewindable: %s", snd_strerror(rewindable));
	rewound = snd_pcm_rewind(pcm, M);
	if (rewound < 0)
		fail("rewind: %s", snd_strerror(rewound));
	after = snd_pcm_rewindable(pcm);
	printf("n=%lu\nm=%lu\nrewindable=%ld\nrewound=%ld\nrewindable_after=%ld\n",
	       N, M, rewindable, rewound, after);
	write_all(pcm, N, rewound);
	CHECK(snd_pcm_drain(pcm));
	snd_pcm_close(pcm);
	return 0;
}

/* --- drain ---------------------------------------------------------------
 * Write everything (more than a buffer), then drain: it must return only
 * once all of it was played (timing, and the WAV already complete), with
 * hw == appl (avail == buffer, delay 0). */
static int cmd_drain(void)
{
	struct geometry g;
	snd_pcm_t *pcm;
	snd_pcm_sframes_t delay;
	struct st s;
	double t0, t1;

	need_frames(RATE / 10);
	pcm = open_pcm(SND_PCM_ACCESS_RW_INTERLEAVED, RATE / 2, RATE / 20, 0, &g, NULL);
	write_all(pcm, 0, data_frames);
	CHECK(snd_pcm_delay(pcm, &delay));
	t0 = now();
	CHECK(snd_pcm_drain(pcm));
	t1 = now();
	s = status(pcm);
	printf("frames=%lu\ndelay_before_drain=%ld\ndrain_seconds=%.4f\n"
	       "state_after=%s\navail_after=%ld\ndelay_after=%ld\nwav_bytes_after_drain=%ld\n",
	       data_frames, delay, t1 - t0, snd_pcm_state_name(s.state), s.avail, s.delay,
	       newest_wav_size());
	snd_pcm_close(pcm);
	return 0;
}

/* --- pause ---------------------------------------------------------------
 * Play half, pause ~0.2 s (the position must stand still, state PAUSED),
 * resume (no jump), play the rest, drain: nothing lost or doubled. */
static int cmd_pause(void)
{
	struct geometry g;
	snd_pcm_t *pcm;
	snd_pcm_uframes_t half;
	snd_pcm_sframes_t amin = -1, amax = -1, dmin = -1, dmax = -1;
	int can_pause, samples = 0, not_paused = 0;
	struct st s;
	double t0, tp, t_start;

	need_frames(RATE / 2);
	half = data_frames / 2;
	t_start = now();
	pcm = open_pcm(SND_PCM_ACCESS_RW_INTERLEAVED, RATE / 5, RATE / 20, 0, &g, &can_pause);
	write_all(pcm, 0, half);
	CHECK(snd_pcm_pause(pcm, 1));
	tp = now();
	t0 = tp;
	while (now() - t0 < 0.2) {
		s = status(pcm);
		if (s.state != SND_PCM_STATE_PAUSED)
			not_paused++;
		if (amin < 0 || s.avail < amin)
			amin = s.avail;
		if (s.avail > amax)
			amax = s.avail;
		if (dmin < 0 || s.delay < dmin)
			dmin = s.delay;
		if (s.delay > dmax)
			dmax = s.delay;
		samples++;
		sleep_s(0.02);
	}
	printf("can_pause=%d\nstate_paused=%s\npaused_samples=%d\nnot_paused=%d\n"
	       "paused_avail_min=%ld\npaused_avail_max=%ld\n"
	       "paused_delay_min=%ld\npaused_delay_max=%ld\n",
	       can_pause, snd_pcm_state_name(snd_pcm_state(pcm)), samples, not_paused,
	       amin, amax, dmin, dmax);
	CHECK(snd_pcm_pause(pcm, 0));
	s = status(pcm);
	printf("pause_seconds=%.4f\nstate_resumed=%s\navail_resumed=%ld\n",
	       now() - tp, snd_pcm_state_name(s.state), s.avail);
	write_all(pcm, half, data_frames - half);
	CHECK(snd_pcm_drain(pcm));
	printf("frames=%lu\ntotal_seconds=%.4f\n", data_frames, now() - t_start);
	snd_pcm_close(pcm);
	return 0;
}

/* --- xrun ----------------------------------------------------------------
 * Write A, stop writing: avail_update must turn to -EPIPE (state XRUN) and
 * writei too; prepare recovers and B plays after A. */
static int cmd_xrun(void)
{
	struct geometry g;
	snd_pcm_t *pcm;
	snd_pcm_uframes_t a;
	snd_pcm_sframes_t r = 0, w;
	double t0, deadline;

	need_frames(RATE / 5);
	a = data_frames / 2;
	pcm = open_pcm(SND_PCM_ACCESS_RW_INTERLEAVED, RATE / 5, RATE / 20, 0, &g, NULL);
	write_all(pcm, 0, a);
	t0 = now();
	deadline = t0 + 2.0 + (double)a / RATE;
	while (now() < deadline) {
		r = snd_pcm_avail_update(pcm);
		if (r < 0)
			break;
		sleep_s(0.005);
	}
	printf("xrun_avail_update=%ld\nxrun_after_seconds=%.4f\nxrun_state=%s\n",
	       r, now() - t0, snd_pcm_state_name(snd_pcm_state(pcm)));
	w = snd_pcm_writei(pcm, frames_at(a), 1);
	printf("writei_in_xrun=%ld\n", w);
	CHECK(snd_pcm_prepare(pcm));
	printf("state_after_prepare=%s\n", snd_pcm_state_name(snd_pcm_state(pcm)));
	write_all(pcm, a, data_frames - a);
	CHECK(snd_pcm_drain(pcm));
	printf("a=%lu\nb=%lu\n", a, data_frames - a);
	snd_pcm_close(pcm);
	return 0;
}

/* --- mmap ----------------------------------------------------------------
 * The whole file through mmap_begin/mmap_commit, started by hand once the
 * buffer is full. */
static int cmd_mmap(void)
{
	struct geometry g;
	snd_pcm_t *pcm;
	snd_pcm_uframes_t done = 0;
	int waits = 0;

	need_frames(1);
	pcm = open_pcm(SND_PCM_ACCESS_MMAP_INTERLEAVED, RATE / 5, RATE / 50, 0, &g, NULL);
	while (done < data_frames) {
		const snd_pcm_channel_area_t *areas;
		snd_pcm_uframes_t offset, frames;
		snd_pcm_sframes_t avail = snd_pcm_avail_update(pcm), c;
		snd_pcm_uframes_t want = data_frames - done < g.period ?
					 data_frames - done : g.period;
		unsigned char *dst;

		if (avail < 0)
			fail("avail_update: %s", snd_strerror(avail));
		if ((snd_pcm_uframes_t)avail < want) {
			if (snd_pcm_state(pcm) == SND_PCM_STATE_PREPARED)
				CHECK(snd_pcm_start(pcm));
			if (snd_pcm_wait(pcm, 2000) == 0)
				fail("snd_pcm_wait timed out (avail %ld)", avail);
			waits++;
			continue;
		}
		frames = data_frames - done;
		CHECK(snd_pcm_mmap_begin(pcm, &areas, &offset, &frames));
		if (areas[0].step != FRAME_BYTES * 8 || areas[0].first % 8)
			fail("unexpected area layout first=%u step=%u", areas[0].first,
			     areas[0].step);
		dst = (unsigned char *)areas[0].addr + areas[0].first / 8 + offset * FRAME_BYTES;
		memcpy(dst, frames_at(done), frames * FRAME_BYTES);
		c = snd_pcm_mmap_commit(pcm, offset, frames);
		if (c < 0 || (snd_pcm_uframes_t)c != frames)
			fail("mmap_commit(%lu) = %ld", frames, c);
		done += frames;
	}
	if (snd_pcm_state(pcm) == SND_PCM_STATE_PREPARED)
		CHECK(snd_pcm_start(pcm));
	CHECK(snd_pcm_drain(pcm));
	printf("frames=%lu\nwaits=%d\n", done, waits);
	snd_pcm_close(pcm);
	return 0;
}

/* --- status --------------------------------------------------------------
 * During steady play (blocking period-sized writes) delay >= 0 and
 * avail + delay stays near the buffer size. */
static int cmd_status(void)
{
	struct geometry g;
	snd_pcm_t *pcm;
	snd_pcm_uframes_t done = 0;
	long sum_min = 0, sum_max = 0, delay_min = 0, delay_max = 0, pdelay_min = 0;
	int n = 0, bad_state = 0;

	need_frames(RATE / 2);
	pcm = open_pcm(SND_PCM_ACCESS_RW_INTERLEAVED, RATE / 5, RATE / 50, 0, &g, NULL);
	while (done < data_frames) {
		snd_pcm_uframes_t chunk = data_frames - done < g.period ?
					  data_frames - done : g.period;
		snd_pcm_sframes_t pd;
		struct st s;
		long sum;

		write_all(pcm, done, chunk);
		done += chunk;
		if (done < 2 * g.buffer || done >= data_frames)
			continue;	/* steady state: after the prefill, before the end */
		s = status(pcm);
		CHECK(snd_pcm_delay(pcm, &pd));
		if (s.state != SND_PCM_STATE_RUNNING)
			bad_state++;
		sum = s.avail + s.delay;
		if (!n || sum < sum_min)
			sum_min = sum;
		if (!n || sum > sum_max)
			sum_max = sum;
		if (!n || s.delay < delay_min)
			delay_min = s.delay;
		if (!n || s.delay > delay_max)
			delay_max = s.delay;
		if (!n || pd < pdelay_min)
			pdelay_min = pd;
		n++;
	}
	CHECK(snd_pcm_drain(pcm));
	printf("frames=%lu\nsamples=%d\nnot_running=%d\nsum_min=%ld\nsum_max=%ld\n"
	       "delay_min=%ld\ndelay_max=%ld\npcm_delay_min=%ld\n",
	       done, n, bad_state, sum_min, sum_max, delay_min, delay_max, pdelay_min);
	snd_pcm_close(pcm);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(void);
	} cmds[] = {
		{ "rewind", cmd_rewind }, { "drain", cmd_drain }, { "pause", cmd_pause },
		{ "xrun", cmd_xrun }, { "mmap", cmd_mmap }, { "status", cmd_status },
	};
	size_t i;

	if (argc < 4) {
		fprintf(stderr, "usage: %s rewind|drain|pause|xrun|mmap|status DEVICE INFILE "
			"[WAVDIR]\n", argv[0]);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	device = argv[2];
	wavdir = argc > 4 ? argv[4] : NULL;
	load(argv[3]);
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(argv[1], cmds[i].name))
			return cmds[i].fn();
	fprintf(stderr, "unknown command %s\n", argv[1]);
	return 2;
}
