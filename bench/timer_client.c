/* timer_client: a timer-scheduled playback writer, as PipeWire's alsa-pcm
 * (and PulseAudio with tsched) drive a card: no poll on the PCM, a timer
 * instead, and only a little data queued.
 *
 *   timer_client DEVICE SECONDS QUANTUM BUFFER [rw|mmap|poll|pollmmap]
 *
 * (poll: the other way, as PulseAudio without tsched and aplay do: period =
 * QUANTUM, avail_min = QUANTUM, poll() on the PCM, then fill the buffer.)
 *
 * S16_LE stereo 48 kHz, RW interleaved (or MMAP interleaved, written with
 * snd_pcm_mmap_begin/commit as PipeWire does), buffer BUFFER frames, start_threshold
 * = boundary (started by hand), stop_threshold = boundary.  Each wake-up:
 * delay = BUFFER - snd_pcm_avail(); if delay <= QUANTUM it writes QUANTUM
 * frames ("cycle"), else the wake-up was early; then it sleeps until delay
 * would reach QUANTUM again at the nominal rate.  With a card whose
 * pointer follows its clock this writes 48000 frames a second.
 *
 * After every write it takes snd_pcm_delay(): the end line gives its median
 * and 5th/95th percentiles ("delay_after_write_ms"), to compare with what
 * the backend really holds then (bench/timer.py).
 *
 * Prints, per second, "sec N frames_written F early E min_delay D max_delay X"
 * and at the end "timer_client: seconds S frames F rate R (x real time) ..."
 * (R is frames per second; 48000 is real time).  Exit 0, 2 on a setup error,
 * 1 on a failed call.
 */
#define _GNU_SOURCE
#include <alsa/asoundlib.h>
#include <poll.h>
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

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
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
	int err, sec = 0, started = 0, mmap = 0, use_poll = 0;
	double *delays, *sdelays;
	size_t n_delays = 0, n_sdelays = 0, cap_delays;
	snd_pcm_status_t *status;

	if (argc != 5 && argc != 6) {
		fprintf(stderr, "usage: timer_client DEVICE SECONDS QUANTUM BUFFER [rw|mmap]\n");
		return 2;
	}
	mmap = argc == 6 && !strcmp(argv[5], "mmap");
	use_poll = argc == 6 && !strncmp(argv[5], "poll", 4);
	if (argc == 6 && !strcmp(argv[5], "pollmmap"))
		mmap = 1;
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
	    (use_poll && (err = snd_pcm_hw_params_set_period_size(pcm, hw, quantum, 0)) < 0) ||
	    (err = snd_pcm_hw_params(pcm, hw)) < 0)
		die("hw_params", err);
	snd_pcm_sw_params_current(pcm, sw);
	snd_pcm_sw_params_get_boundary(sw, &boundary);
	if ((err = snd_pcm_sw_params_set_start_threshold(pcm, sw, boundary)) < 0 ||
	    (err = snd_pcm_sw_params_set_stop_threshold(pcm, sw, boundary)) < 0 ||
	    (err = snd_pcm_sw_params_set_avail_min(pcm, sw, quantum)) < 0 ||
	    (err = snd_pcm_sw_params(pcm, sw)) < 0)
		die("sw_params", err);
	frames = calloc(quantum, 4);
	for (snd_pcm_uframes_t i = 0; i < quantum; i++)  /* a quiet 750 Hz square */
		frames[2 * i] = frames[2 * i + 1] = (i / 32) % 2 ? 3000 : -3000;

	cap_delays = (size_t)(seconds * RATE / quantum * 2) + 1024;
	delays = malloc(cap_delays * sizeof(*delays));
	sdelays = malloc(cap_delays * sizeof(*sdelays));
	snd_pcm_status_alloca(&status);
	t0 = sec_start = next = now_ns();
	t_end = t0 + (int64_t)(seconds * 1e9);
	while (use_poll && now_ns() < t_end) {
		struct pollfd fds[8];
		unsigned short rev;
		snd_pcm_sframes_t avail, r, d;
		int n = snd_pcm_poll_descriptors(pcm, fds, 8);

		if (started && poll(fds, n, 1000) < 0)
			return 1;
		if (started && (snd_pcm_poll_descriptors_revents(pcm, fds, n, &rev) < 0 ||
				!(rev & POLLOUT)))
			continue;
		avail = snd_pcm_avail(pcm);
		if (avail < 0) {
			fprintf(stderr, "timer_client: avail: %s\n", snd_strerror((int)avail));
			return 1;
		}
		while (avail >= (snd_pcm_sframes_t)quantum) {
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
			written += r;
			avail -= r;
			cycles++;
		}
		if (!started && (err = snd_pcm_start(pcm)) < 0) {
			fprintf(stderr, "timer_client: start: %s\n", snd_strerror(err));
			return 1;
		}
		started = 1;
		if (snd_pcm_delay(pcm, &d) == 0 && n_delays < cap_delays)
			delays[n_delays++] = d * 1000.0 / RATE;
		if (snd_pcm_status(pcm, status) == 0 && n_sdelays < cap_delays)
			sdelays[n_sdelays++] = snd_pcm_status_get_delay(status) * 1000.0 / RATE;
	}
	while (!use_poll && now_ns() < t_end) {
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
			{
				snd_pcm_sframes_t d;

				if (snd_pcm_delay(pcm, &d) == 0 && n_delays < cap_delays)
					delays[n_delays++] = d * 1000.0 / RATE;
			}
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
	qsort(delays, n_delays, sizeof(*delays), cmp_double);
	qsort(sdelays, n_sdelays, sizeof(*sdelays), cmp_double);
	printf("timer_client: seconds %.2f frames %lld rate %.0f (%.3f x real time) cycles %lld "
	       "early %lld quantum %lu buffer %lu %s delay_after_write_ms median %.2f p5 %.2f "
	       "p95 %.2f status_delay_ms median %.2f\n", seconds, (long long)written,
	       written / seconds, written / seconds / RATE, (long long)cycles, (long long)early,
	       (unsigned long)quantum, (unsigned long)buffer,
	       use_poll ? (mmap ? "pollmmap" : "poll") : mmap ? "mmap" : "rw",
	       n_delays ? delays[n_delays / 2] : 0.0, n_delays ? delays[n_delays / 20] : 0.0,
	       n_delays ? delays[n_delays * 19 / 20] : 0.0,
	       n_sdelays ? sdelays[n_sdelays / 2] : 0.0);
	snd_pcm_drop(pcm);
	snd_pcm_close(pcm);
	return 0;
}
