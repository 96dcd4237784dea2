/* timer_client: a timer-scheduled playback writer, as PipeWire's alsa-pcm
 * (and PulseAudio with tsched) drive a card: no poll on the PCM, a timer
 * instead, and only a little data queued.
 *
 *   timer_client DEVICE SECONDS QUANTUM BUFFER [rw|mmap]
 *
 * S16_LE stereo 48 kHz, RW interleaved (or MMAP interleaved, written with
 * snd_pcm_mmap_begin/commit as PipeWire does), buffer BUFFER frames, start_threshold
 * = boundary (started by hand), stop_threshold = boundary.  Each wake-up:
 * delay = BUFFER - snd_pcm_avail(); if delay <= QUANTUM it writes QUANTUM
 * frames ("cycle"), else the wake-up was early; then it sleeps until delay
 * would reach QUANTUM again at the nominal rate.  With a card whose
 * pointer follows its clock this writes 48000 frames a second.
 *
 * Prints, per second, "sec N frames_written F early E min_delay D max_delay X"
 * and at the end "timer_client: seconds S frames F rate R (x real time) ..."
 * (R is frames per second; 48000 is real time).  Exit 0, 2 on a setup error,
 * 1 on a failed call.
 */
#define _GNU_SOURCE
#include <alsa/asoundlib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RATE 48000

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_until(int64_t t)
{
	struct timespec ts = { t / 1000000000, t % 1000000000 };

	clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
}

static void die(const char *what, int err)
{
	fprintf(stderr, "timer_client: %s: %s\n", what, snd_strerror(err));
	exit(2);
}

int main(int argc, char **argv)
{
	snd_pcm_t *pcm;
	snd_pcm_hw_params_t *hw;
	snd_pcm_sw_params_t *sw;
	snd_pcm_uframes_t boundary, buffer, quantum;
	int16_t *frames;
	double seconds;
	int64_t t0, t_end, next, sec_start, written = 0, sec_written = 0, cycles = 0, early = 0;
	int64_t sec_early = 0, min_d = INT64_MAX, max_d = 0;
	int err, sec = 0, started = 0, mmap = 0;

	if (argc != 5 && argc != 6) {
		fprintf(stderr, "usage: timer_client DEVICE SECONDS QUANTUM BUFFER [rw|mmap]\n");
		return 2;
	}
	mmap = argc == 6 && !strcmp(argv[5], "mmap");
	seconds = atof(argv[2]);
	quantum = (snd_pcm_uframes_t)atol(argv[3]);
	buffer = (snd_pcm_uframes_t)atol(argv[4]);
	if ((err = snd_pcm_open(&pcm, argv[1], SND_PCM_STREAM_PLAYBACK, 0)) < 0)
		die("snd_pcm_open", err);
	snd_pcm_hw_params_alloca(&hw);
	snd_pcm_sw_params_alloca(&sw);
	snd_pcm_hw_params_any(pcm, hw);
	if ((err = snd_pcm_hw_params_set_access(pcm, hw, mmap ?
						SND_PCM_ACCESS_MMAP_INTERLEAVED : SND_PCM_ACCESS_RW_INTERLEAVED)) < 0 ||
	    (err = snd_pcm_hw_params_set_format(pcm, hw, SND_PCM_FORMAT_S16_LE)) < 0 ||
	    (err = snd_pcm_hw_params_set_channels(pcm, hw, 2)) < 0 ||
	    (err = snd_pcm_hw_params_set_rate(pcm, hw, RATE, 0)) < 0 ||
	    (err = snd_pcm_hw_params_set_buffer_size_near(pcm, hw, &buffer)) < 0 ||
	    (err = snd_pcm_hw_params(pcm, hw)) < 0)
		die("hw_params", err);
	snd_pcm_sw_params_current(pcm, sw);
	snd_pcm_sw_params_get_boundary(sw, &boundary);
	if ((err = snd_pcm_sw_params_set_start_threshold(pcm, sw, boundary)) < 0 ||
	    (err = snd_pcm_sw_params_set_stop_threshold(pcm, sw, boundary)) < 0 ||
	    (err = snd_pcm_sw_params(pcm, sw)) < 0)
		die("sw_params", err);
	frames = calloc(quantum, 4);
	for (snd_pcm_uframes_t i = 0; i < quantum; i++)  /* a quiet 750 Hz square */
		frames[2 * i] = frames[2 * i + 1] = (i / 32) % 2 ? 3000 : -3000;

	t0 = sec_start = next = now_ns();
	t_end = t0 + (int64_t)(seconds * 1e9);
	while (now_ns() < t_end) {
		snd_pcm_sframes_t avail = snd_pcm_avail(pcm);
		int64_t delay, t;

		if (avail < 0) {
			fprintf(stderr, "timer_client: avail: %s\n", snd_strerror((int)avail));
			return 1;
		}
		delay = (int64_t)buffer - avail;
		if (delay < min_d)
			min_d = delay;
		if (delay > max_d)
			max_d = delay;
		if (delay <= (int64_t)quantum) {
			snd_pcm_sframes_t r;

			if (mmap) {
				const snd_pcm_channel_area_t *areas;
				snd_pcm_uframes_t off, n = quantum;

				r = snd_pcm_mmap_begin(pcm, &areas, &off, &n);
				if (r >= 0) {
					memcpy((char *)areas[0].addr + off * 4, frames, n * 4);
					r = snd_pcm_mmap_commit(pcm, off, n);
				}
			} else {
				r = snd_pcm_writei(pcm, frames, quantum);
			}

			if (r < 0) {
				fprintf(stderr, "timer_client: writei: %s\n", snd_strerror((int)r));
				return 1;
			}
			if (!started && (err = snd_pcm_start(pcm)) < 0) {
				fprintf(stderr, "timer_client: start: %s\n", snd_strerror(err));
				return 1;
			}
			started = 1;
			written += r;
			sec_written += r;
			delay += r;
			cycles++;
		} else {
			early++;
			sec_early++;
		}
		/* wake when delay would be down to QUANTUM again */
		t = now_ns();
		next = t + (delay - (int64_t)quantum) * 1000000000 / RATE;
		if (t - sec_start >= 1000000000) {
			printf("sec %d frames_written %lld early %lld min_delay %lld max_delay %lld\n",
			       ++sec, (long long)sec_written, (long long)sec_early,
			       (long long)min_d, (long long)max_d);
			fflush(stdout);
			sec_start += 1000000000;
			sec_written = sec_early = 0;
			min_d = INT64_MAX;
			max_d = 0;
		}
		sleep_until(next);
	}
	seconds = (now_ns() - t0) / 1e9;
	printf("timer_client: seconds %.2f frames %lld rate %.0f (%.3f x real time) cycles %lld "
	       "early %lld quantum %lu buffer %lu %s\n", seconds, (long long)written,
	       written / seconds, written / seconds / RATE, (long long)cycles, (long long)early,
	       (unsigned long)quantum, (unsigned long)buffer, mmap ? "mmap" : "rw");
	snd_pcm_drop(pcm);
	snd_pcm_close(pcm);
	return 0;
}
