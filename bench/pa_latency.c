/* pa_latency: the latency PulseAudio reports for a sink, sampled with
 * timestamps, for bench/pulseaudio.py.
 *
 *   pa_latency SINK SECONDS INTERVAL_MS
 *
 * Connects to the server (PULSE_SERVER), then every INTERVAL_MS asks for the
 * sink's info (what `pactl list sinks` prints as "Latency: X usec,
 * configured Y usec": the sink's own latency, i.e. what it has handed to
 * the device and the device has not played yet) and prints one line per
 * answer:
 *
 *   lat T0_NS T1_NS LATENCY_US CONFIGURED_US STATE
 *
 * T0/T1: CLOCK_MONOTONIC before the request and when the answer came (the
 * server computed it in between: a round trip over a unix socket, well
 * under a millisecond unless something preempts).  Exit 0; 2 when it
 * cannot connect or the sink does not exist.
 */
#define _GNU_SOURCE
#include <pulse/pulseaudio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct sample {
	int done, found;
	pa_usec_t latency, configured;
	int state;
};

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void on_sink(pa_context *c, const pa_sink_info *i, int eol, void *data)
{
	struct sample *s = data;

	if (eol) {
		s->done = 1;
		return;
	}
	s->found = 1;
	s->latency = i->latency;
	s->configured = i->configured_latency;
	s->state = i->state;
}

int main(int argc, char **argv)
{
	pa_mainloop *m;
	pa_context *c;
	const char *sink;
	int64_t t_end, next, interval;

	if (argc != 4) {
		fprintf(stderr, "usage: pa_latency SINK SECONDS INTERVAL_MS\n");
		return 2;
	}
	sink = argv[1];
	t_end = now_ns() + (int64_t)(atof(argv[2]) * 1e9);
	interval = (int64_t)(atof(argv[3]) * 1e6);
	m = pa_mainloop_new();
	c = pa_context_new(pa_mainloop_get_api(m), "pa_latency");
	if (pa_context_connect(c, NULL, PA_CONTEXT_NOAUTOSPAWN, NULL) < 0) {
		fprintf(stderr, "pa_latency: connect: %s\n", pa_strerror(pa_context_errno(c)));
		return 2;
	}
	for (;;) {
		pa_context_state_t st = pa_context_get_state(c);

		if (st == PA_CONTEXT_READY)
			break;
		if (!PA_CONTEXT_IS_GOOD(st) || now_ns() > t_end) {
			fprintf(stderr, "pa_latency: cannot connect: %s\n",
				pa_strerror(pa_context_errno(c)));
			return 2;
		}
		pa_mainloop_iterate(m, 1, NULL);
	}
	next = now_ns();
	while (now_ns() < t_end) {
		struct sample s = { 0 };
		int64_t t0 = now_ns(), t1;
		pa_operation *o = pa_context_get_sink_info_by_name(c, sink, on_sink, &s);

		while (!s.done && pa_operation_get_state(o) == PA_OPERATION_RUNNING)
			if (pa_mainloop_iterate(m, 1, NULL) < 0)
				return 2;
		t1 = now_ns();
		pa_operation_unref(o);
		if (!s.found) {
			fprintf(stderr, "pa_latency: no sink %s\n", sink);
			return 2;
		}
		printf("lat %lld %lld %llu %llu %d\n", (long long)t0, (long long)t1,
		       (unsigned long long)s.latency, (unsigned long long)s.configured, s.state);
		next += interval;
		while (now_ns() < next) {
			struct timespec ts = { next / 1000000000, next % 1000000000 };

			clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
		}
	}
	fflush(stdout);
	pa_context_disconnect(c);
	pa_context_unref(c);
	pa_mainloop_free(m);
	return 0;
}
