/* pointer_bench: steady playback on an ALSA PCM while sampling its hardware
 * pointer very often, and timing snd_pcm_avail_update() on it and on a
 * second PCM (alsa-lib's "null") in the same loop.
 *
 *   pointer_bench DEVICE NULLDEV SECONDS RATE PERIOD BUFFER INTERVAL_US OUT
 *
 * Playback is S16_LE stereo, RW interleaved, non-blocking; the buffer is kept
 * topped up with period-sized writes (a quiet sine).  Every INTERVAL_US
 * (absolute clock_nanosleep deadlines) one iteration does:
 *
 *   t0 = now; avail = snd_pcm_avail_update(pcm); t1 = now
 *   n0 = now; snd_pcm_avail_update(null);        n1 = now
 *   hw = frames_written - (buffer - avail)         (the plugin's hw_ptr)
 *   if avail >= period: writei(period)             (timed, recorded)
 *
 * Records go to OUT as packed little-endian int64 x 7:
 *   kind (0 sample, 1 write, 2 error), seg, t0_ns, t1_ns, value, extra, appl
 *   sample: value = hw, extra = duration of the null call (ns)
 *   write:  value = frames written, extra = writei's return
 *   error:  value = the negative errno (the stream is prepared again, seg++)
 *   delay (kind 3, every 16th iteration): value = snd_pcm_delay()
 * One summary line goes to stdout.  Exit status 0 unless setup failed.
 */
#define _GNU_SOURCE
#include <alsa/asoundlib.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define CHANNELS 2

struct rec {
	int64_t kind, seg, t0, t1, value, extra, appl;
};

static struct rec *recs;
static size_t nrecs, caprecs;

static inline int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void add(int64_t kind, int64_t seg, int64_t t0, int64_t t1, int64_t value,
		int64_t extra, int64_t appl)
{
	if (nrecs == caprecs)
		return; /* preallocated for the whole run; never reached in practice */
	recs[nrecs++] = (struct rec){kind, seg, t0, t1, value, extra, appl};
}

static void die(const char *what, int err)
{
	fprintf(stderr, "pointer_bench: %s: %s\n", what, snd_strerror(err));
	exit(2);
}

static void setup(snd_pcm_t *pcm, unsigned rate, snd_pcm_uframes_t *period,
		  snd_pcm_uframes_t *buffer, int start_at_buffer)
{
	snd_pcm_hw_params_t *hw;
	snd_pcm_sw_params_t *sw;
	unsigned r = rate;
	int err;

	snd_pcm_hw_params_alloca(&hw);
	snd_pcm_sw_params_alloca(&sw);
	if ((err = snd_pcm_hw_params_any(pcm, hw)) < 0)
		die("hw_params_any", err);
	if ((err = snd_pcm_hw_params_set_access(pcm, hw, SND_PCM_ACCESS_RW_INTERLEAVED)) < 0)
		die("set_access", err);
	if ((err = snd_pcm_hw_params_set_format(pcm, hw, SND_PCM_FORMAT_S16_LE)) < 0)
		die("set_format", err);
	if ((err = snd_pcm_hw_params_set_channels(pcm, hw, CHANNELS)) < 0)
		die("set_channels", err);
	if ((err = snd_pcm_hw_params_set_rate_near(pcm, hw, &r, NULL)) < 0)
		die("set_rate", err);
	if (r != rate) {
		fprintf(stderr, "pointer_bench: rate %u, asked %u\n", r, rate);
		exit(2);
	}
	if ((err = snd_pcm_hw_params_set_period_size_near(pcm, hw, period, NULL)) < 0)
		die("set_period_size", err);
	if ((err = snd_pcm_hw_params_set_buffer_size_near(pcm, hw, buffer)) < 0)
		die("set_buffer_size", err);
	if ((err = snd_pcm_hw_params(pcm, hw)) < 0)
		die("hw_params", err);
	snd_pcm_hw_params_get_period_size(hw, period, NULL);
	snd_pcm_hw_params_get_buffer_size(hw, buffer);

	if ((err = snd_pcm_sw_params_current(pcm, sw)) < 0)
		die("sw_params_current", err);
	snd_pcm_sw_params_set_avail_min(pcm, sw, *period);
	snd_pcm_sw_params_set_start_threshold(pcm, sw, start_at_buffer ? *buffer : 1);
	if ((err = snd_pcm_sw_params(pcm, sw)) < 0)
		die("sw_params", err);
}

static int16_t *tone;       /* one buffer of a quiet sine, interleaved */
static snd_pcm_uframes_t tone_frames;
static snd_pcm_uframes_t tone_pos;

static snd_pcm_sframes_t write_some(snd_pcm_t *pcm, snd_pcm_uframes_t frames)
{
	/* the sine period divides tone_frames only approximately: a click per
	 * buffer is irrelevant to the sink ("null") */
	if (tone_pos + frames > tone_frames)
		tone_pos = 0;
	snd_pcm_sframes_t n = snd_pcm_writei(pcm, tone + tone_pos * CHANNELS, frames);
	if (n > 0)
		tone_pos = (tone_pos + n) % tone_frames;
	return n;
}

/* Fill the buffer (the stream starts at start_threshold = buffer). */
static int prefill(snd_pcm_t *pcm, snd_pcm_uframes_t buffer, snd_pcm_uframes_t period,
		   int64_t *appl, int64_t seg)
{
	snd_pcm_uframes_t done = 0;
	while (done < buffer) {
		int64_t t0 = now_ns();
		snd_pcm_sframes_t n = write_some(pcm, period);
		int64_t t1 = now_ns();
		if (n < 0)
			return (int)n;
		*appl += n;
		done += n;
		add(1, seg, t0, t1, n, n, *appl);
	}
	return 0;
}

static double clock_overhead_ns(void)
{
	/* median of 20001 back-to-back clock_gettime pairs */
	enum { N = 20001 };
	static int64_t d[N];
	for (int i = 0; i < N; i++) {
		int64_t a = now_ns();
		int64_t b = now_ns();
		d[i] = b - a;
	}
	/* partial selection sort is too slow; counting is enough (small values) */
	int64_t lo = d[0], hi = d[0];
	for (int i = 1; i < N; i++) {
		if (d[i] < lo) lo = d[i];
		if (d[i] > hi) hi = d[i];
	}
	if (hi - lo > 100000)
		hi = lo + 100000;
	size_t span = (size_t)(hi - lo + 1);
	unsigned *cnt = calloc(span, sizeof(*cnt));
	for (int i = 0; i < N; i++)
		cnt[(d[i] - lo) < (int64_t)span ? d[i] - lo : (int64_t)span - 1]++;
	unsigned acc = 0;
	double med = (double)hi;
	for (size_t k = 0; k < span; k++) {
		acc += cnt[k];
		if (acc > N / 2) {
			med = (double)(lo + (int64_t)k);
			break;
		}
	}
	free(cnt);
	return med;
}

int main(int argc, char **argv)
{
	if (argc != 9) {
		fprintf(stderr, "usage: %s DEVICE NULLDEV SECONDS RATE PERIOD BUFFER INTERVAL_US OUT\n",
			argv[0]);
		return 2;
	}
	const char *dev = argv[1], *nulldev = argv[2], *out = argv[8];
	double seconds = atof(argv[3]);
	unsigned rate = (unsigned)atoi(argv[4]);
	snd_pcm_uframes_t period = (snd_pcm_uframes_t)atol(argv[5]);
	snd_pcm_uframes_t buffer = (snd_pcm_uframes_t)atol(argv[6]);
	long interval_ns = atol(argv[7]) * 1000L;
	snd_pcm_t *pcm, *nul;
	int err;

	double clk = clock_overhead_ns();

	if ((err = snd_pcm_open(&pcm, dev, SND_PCM_STREAM_PLAYBACK, SND_PCM_NONBLOCK)) < 0)
		die(dev, err);
	if ((err = snd_pcm_open(&nul, nulldev, SND_PCM_STREAM_PLAYBACK, SND_PCM_NONBLOCK)) < 0)
		die(nulldev, err);
	setup(pcm, rate, &period, &buffer, 1);
	snd_pcm_uframes_t nperiod = period, nbuffer = buffer;
	setup(nul, rate, &nperiod, &nbuffer, 1);

	tone_frames = buffer * 4;
	tone = malloc(tone_frames * CHANNELS * sizeof(*tone));
	for (snd_pcm_uframes_t i = 0; i < tone_frames; i++) {
		int16_t v = (int16_t)lrint(3000.0 * sin(2 * M_PI * 440.0 * (double)i / rate));
		tone[2 * i] = tone[2 * i + 1] = v;
	}

	caprecs = (size_t)(seconds * 1e9 / (double)interval_ns * 1.6) +
		  (size_t)(seconds * rate / period) * 2 + 4096;
	recs = calloc(caprecs, sizeof(*recs));
	if (!recs || !tone) {
		fprintf(stderr, "pointer_bench: out of memory\n");
		return 2;
	}

	/* the null PCM runs too, so its avail_update takes the RUNNING path */
	if ((err = snd_pcm_prepare(nul)) < 0)
		die("prepare null", err);
	if ((err = snd_pcm_start(nul)) < 0)
		die("start null", err);

	int64_t appl = 0, seg = 0, errors = 0, samples = 0, writes = 0;
	if ((err = snd_pcm_prepare(pcm)) < 0)
		die("prepare", err);
	if ((err = prefill(pcm, buffer, period, &appl, seg)) < 0)
		die("prefill", err);
	if (snd_pcm_state(pcm) != SND_PCM_STATE_RUNNING)
		die("not running after the prefill", -EBADFD);

	int64_t start = now_ns();
	int64_t end = start + (int64_t)(seconds * 1e9);
	struct timespec next;
	clock_gettime(CLOCK_MONOTONIC, &next);
	for (;;) {
		int64_t t0 = now_ns();
		if (t0 >= end)
			break;
		snd_pcm_sframes_t av = snd_pcm_avail_update(pcm);
		int64_t t1 = now_ns();
		int64_t n0 = now_ns();
		snd_pcm_sframes_t nav = snd_pcm_avail_update(nul);
		int64_t n1 = now_ns();
		(void)nav;
		if (av < 0) {
			add(2, seg, t0, t1, av, 0, appl);
			errors++;
			seg++;
			appl = 0;
			if ((err = snd_pcm_prepare(pcm)) < 0)
				die("prepare after error", err);
			if ((err = prefill(pcm, buffer, period, &appl, seg)) < 0)
				die("prefill after error", err);
			clock_gettime(CLOCK_MONOTONIC, &next);
			continue;
		}
		add(0, seg, t0, t1, appl - ((int64_t)buffer - av), n1 - n0, appl);
		samples++;
		if (samples % 16 == 0) {
			snd_pcm_sframes_t d = 0;
			int64_t d0 = now_ns();
			if (snd_pcm_delay(pcm, &d) == 0)
				add(3, seg, d0, now_ns(), d, 0, appl);
		}
		if ((snd_pcm_uframes_t)av >= period) {
			int64_t w0 = now_ns();
			snd_pcm_sframes_t n = write_some(pcm, period);
			int64_t w1 = now_ns();
			if (n > 0) {
				appl += n;
				writes++;
			} else if (n != -EAGAIN) {
				/* an xrun shows on the next avail_update */
				errors++;
			}
			add(1, seg, w0, w1, n > 0 ? n : 0, n, appl);
		}
		next.tv_nsec += interval_ns;
		while (next.tv_nsec >= 1000000000L) {
			next.tv_nsec -= 1000000000L;
			next.tv_sec++;
		}
		int64_t nx = (int64_t)next.tv_sec * 1000000000 + next.tv_nsec;
		int64_t cur = now_ns();
		if (nx < cur) { /* late: do not try to catch up */
			next.tv_sec = cur / 1000000000;
			next.tv_nsec = cur % 1000000000;
			continue;
		}
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
			;
	}
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	snd_pcm_state_t st = snd_pcm_state(pcm);
	snd_pcm_drop(pcm);
	snd_pcm_close(pcm);
	snd_pcm_drop(nul);
	snd_pcm_close(nul);

	FILE *f = fopen(out, "wb");
	if (!f || fwrite(recs, sizeof(*recs), nrecs, f) != nrecs || fclose(f) != 0) {
		perror(out);
		return 2;
	}
	printf("pointer_bench: rate=%u period=%lu buffer=%lu null_period=%lu null_buffer=%lu "
	       "samples=%lld writes=%lld errors=%lld segments=%lld records=%zu dropped=%d "
	       "final_state=%s clock_ns=%.0f nvcsw=%ld nivcsw=%ld cpu_s=%.3f\n",
	       rate, (unsigned long)period, (unsigned long)buffer, (unsigned long)nperiod,
	       (unsigned long)nbuffer, (long long)samples, (long long)writes, (long long)errors,
	       (long long)seg + 1, nrecs, nrecs == caprecs, snd_pcm_state_name(st), clk,
	       ru.ru_nvcsw, ru.ru_nivcsw,
	       ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
	       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
	return 0;
}
