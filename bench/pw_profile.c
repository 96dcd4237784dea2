/* pw_profile: PipeWire's own profiler counters, for bench/pipewire.py.
 *
 *   pw_profile SECONDS
 *
 * Connects to the PipeWire daemon (PIPEWIRE_RUNTIME_DIR, PIPEWIRE_REMOTE),
 * binds the Profiler that libpipewire-module-profiler exports (what pw-top
 * and pw-profiler read: bookworm's 0.3.65 pw-top has no batch mode) and
 * accumulates, per driver node, what the profiler reports every cycle:
 *
 *   cycles     profiler samples (one per graph cycle of that driver);
 *   counted    the profiler's sample counter, last - first + 1 (shared by
 *              all drivers in 0.3.65: not a per-driver cycle count);
 *   xruns      the driver's xrun count (its activation's xrun_count: ALSA
 *              xruns the node reports and graph cycles that did not finish),
 *              as the last sample minus the first: pw-top's ERR column;
 *   unfinished follower samples whose status was not "finished" when the
 *              driver started the next cycle;
 *   max_period_us  the longest interval between two driver wake-ups;
 *   max_busy_us    the longest wake-up-to-finish time of a cycle.
 *
 * Once a second and at the end (SECONDS elapsed, SIGINT or SIGTERM) it
 * prints one line per driver:
 *   pw_profile t=S driver=NAME id=N quantum=Q rate=R cycles=C xruns=X
 *              unfinished=U max_period_us=P max_busy_us=B counted=K
 * and "pw_profile end" last.  Exit status 0, 2 when it cannot connect.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <pipewire/impl.h>
#include <pipewire/extensions/profiler.h>
#include <spa/param/profiler.h>
#include <spa/pod/iter.h>
#include <spa/pod/parser.h>
#include <spa/utils/result.h>

#define MAX_DRIVERS 16

struct driver {
	uint32_t id;
	char name[128];
	int64_t cycles, unfinished, quantum, counter_first, counter_last;
	uint32_t rate;
	int32_t xrun_first, xrun_last;
	double max_period_us, max_busy_us;
};

struct data {
	struct pw_main_loop *loop;
	struct pw_context *context;
	struct pw_core *core;
	struct spa_hook core_listener;
	struct pw_registry *registry;
	struct spa_hook registry_listener;
	struct pw_proxy *profiler;
	struct spa_hook profiler_listener;
	struct timespec t0;
	int n_drivers;
	struct driver drivers[MAX_DRIVERS];
};

static double since(const struct data *d)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (ts.tv_sec - d->t0.tv_sec) + (ts.tv_nsec - d->t0.tv_nsec) / 1e9;
}

static struct driver *find_driver(struct data *d, uint32_t id, const char *name)
{
	for (int i = 0; i < d->n_drivers; i++)
		if (d->drivers[i].id == id && !strcmp(d->drivers[i].name, name))
			return &d->drivers[i];
	if (d->n_drivers == MAX_DRIVERS)
		return NULL;
	struct driver *r = &d->drivers[d->n_drivers++];
	memset(r, 0, sizeof(*r));
	r->id = id;
	snprintf(r->name, sizeof(r->name), "%s", name);
	r->xrun_first = -1;
	return r;
}

static void one_sample(struct data *d, const struct spa_pod_object *o)
{
	struct spa_pod_prop *p;
	int32_t info_xruns = -1, status = 0, f_status, xr = -1;
	int64_t duration = 0, prev = 0, signal_t = 0, awake = 0, finish = 0, counter = 0;
	uint32_t driver_id = 0;
	const char *name = NULL;
	struct spa_fraction rate = { 0, 1 }, lat;
	int64_t unfinished = 0;
	float l0, l1, l2;

	SPA_POD_OBJECT_FOREACH(o, p) {
		switch (p->key) {
		case SPA_PROFILER_info:
			spa_pod_parse_struct(&p->value, SPA_POD_Long(&counter), SPA_POD_Float(&l0),
					     SPA_POD_Float(&l1), SPA_POD_Float(&l2),
					     SPA_POD_OPT_Int(&info_xruns));
			break;
		case SPA_PROFILER_clock: {
			int32_t flags, cid;
			char cname[64];
			int64_t nsec, position, delay, next;
			double diff;

			spa_pod_parse_struct(&p->value, SPA_POD_Int(&flags), SPA_POD_Int(&cid),
					     SPA_POD_Stringn(cname, sizeof(cname)), SPA_POD_Long(&nsec),
					     SPA_POD_Fraction(&rate), SPA_POD_Long(&position),
					     SPA_POD_Long(&duration), SPA_POD_Long(&delay),
					     SPA_POD_Double(&diff), SPA_POD_Long(&next));
			break;
		}
		case SPA_PROFILER_driverBlock:
			spa_pod_parse_struct(&p->value, SPA_POD_Int(&driver_id), SPA_POD_String(&name),
					     SPA_POD_Long(&prev), SPA_POD_Long(&signal_t),
					     SPA_POD_Long(&awake), SPA_POD_Long(&finish),
					     SPA_POD_Int(&status), SPA_POD_Fraction(&lat),
					     SPA_POD_OPT_Int(&xr));
			break;
		case SPA_PROFILER_followerBlock: {
			uint32_t fid;
			const char *fname;
			int64_t fp, fs, fa, ff;

			f_status = 0;
			if (spa_pod_parse_struct(&p->value, SPA_POD_Int(&fid), SPA_POD_String(&fname),
						 SPA_POD_Long(&fp), SPA_POD_Long(&fs),
						 SPA_POD_Long(&fa), SPA_POD_Long(&ff),
						 SPA_POD_Int(&f_status)) >= 0 &&
			    f_status != 3 /* PW_NODE_ACTIVATION_FINISHED */)
				unfinished++;
			break;
		}
		default:
			break;
		}
	}
	if (name == NULL)
		return;
	struct driver *r = find_driver(d, driver_id, name);
	if (r == NULL)
		return;
	if (xr < 0)
		xr = info_xruns;
	if (xr >= 0) {
		if (r->xrun_first < 0)
			r->xrun_first = xr;
		r->xrun_last = xr;
	}
	if (r->cycles == 0)
		r->counter_first = counter;
	r->counter_last = counter;
	r->cycles++;
	r->unfinished += unfinished;
	r->quantum = duration;
	r->rate = rate.denom;
	if (r->cycles > 1 && prev > 0 && signal_t > prev) {
		double us = (signal_t - prev) / 1e3;
		if (us > r->max_period_us)
			r->max_period_us = us;
	}
	if (finish > signal_t && signal_t > 0) {
		double us = (finish - signal_t) / 1e3;
		if (us > r->max_busy_us)
			r->max_busy_us = us;
	}
}

static void on_profile(void *data, const struct spa_pod *pod)
{
	struct data *d = data;
	struct spa_pod *o;

	SPA_POD_STRUCT_FOREACH(pod, o) {
		if (spa_pod_is_object_type(o, SPA_TYPE_OBJECT_Profiler))
			one_sample(d, (const struct spa_pod_object *)o);
	}
}

static const struct pw_profiler_events profiler_events = {
	PW_VERSION_PROFILER_EVENTS,
	.profile = on_profile,
};

static void on_global(void *data, uint32_t id, uint32_t permissions, const char *type,
		      uint32_t version, const struct spa_dict *props)
{
	struct data *d = data;

	if (d->profiler != NULL || strcmp(type, PW_TYPE_INTERFACE_Profiler) != 0)
		return;
	d->profiler = pw_registry_bind(d->registry, id, type, PW_VERSION_PROFILER, 0);
	if (d->profiler == NULL) {
		fprintf(stderr, "pw_profile: cannot bind the profiler: %m\n");
		pw_main_loop_quit(d->loop);
		return;
	}
	pw_proxy_add_object_listener(d->profiler, &d->profiler_listener, &profiler_events, d);
}

static const struct pw_registry_events registry_events = {
	PW_VERSION_REGISTRY_EVENTS,
	.global = on_global,
};

static void on_core_error(void *data, uint32_t id, int seq, int res, const char *message)
{
	struct data *d = data;

	fprintf(stderr, "pw_profile: error id:%u seq:%d res:%d (%s): %s\n", id, seq, res,
		spa_strerror(res), message);
	if (id == PW_ID_CORE)
		pw_main_loop_quit(d->loop);
}

static const struct pw_core_events core_events = {
	PW_VERSION_CORE_EVENTS,
	.error = on_core_error,
};

static void report(struct data *d)
{
	double t = since(d);

	for (int i = 0; i < d->n_drivers; i++) {
		struct driver *r = &d->drivers[i];
		printf("pw_profile t=%.1f driver=%s id=%u quantum=%lld rate=%u cycles=%lld "
		       "xruns=%d unfinished=%lld max_period_us=%.0f max_busy_us=%.0f counted=%lld\n",
		       t, r->name, r->id, (long long)r->quantum, r->rate, (long long)r->cycles,
		       r->xrun_first < 0 ? 0 : r->xrun_last - r->xrun_first,
		       (long long)r->unfinished, r->max_period_us, r->max_busy_us,
		       (long long)(r->counter_last - r->counter_first + (r->cycles > 0)));
	}
	fflush(stdout);
}

static void on_tick(void *data, uint64_t expirations)
{
	report(data);
}

static void on_end(void *data, uint64_t expirations)
{
	pw_main_loop_quit(((struct data *)data)->loop);
}

static void on_signal(void *data, int signal_number)
{
	pw_main_loop_quit(((struct data *)data)->loop);
}

int main(int argc, char *argv[])
{
	struct data d;
	struct pw_loop *l;
	struct timespec one = { 1, 0 }, zero = { 0, 0 }, end;
	double seconds;

	if (argc != 2 || (seconds = atof(argv[1])) <= 0) {
		fprintf(stderr, "usage: pw_profile SECONDS\n");
		return 2;
	}
	memset(&d, 0, sizeof(d));
	clock_gettime(CLOCK_MONOTONIC, &d.t0);
	pw_init(&argc, &argv);
	d.loop = pw_main_loop_new(NULL);
	l = pw_main_loop_get_loop(d.loop);
	pw_loop_add_signal(l, SIGINT, on_signal, &d);
	pw_loop_add_signal(l, SIGTERM, on_signal, &d);
	d.context = pw_context_new(l, NULL, 0);
	/* the Profiler interface's marshalling lives in the module */
	if (pw_context_load_module(d.context, PW_EXTENSION_MODULE_PROFILER, NULL, NULL) == NULL) {
		fprintf(stderr, "pw_profile: cannot load %s: %m\n", PW_EXTENSION_MODULE_PROFILER);
		return 2;
	}
	d.core = pw_context_connect(d.context, NULL, 0);
	if (d.core == NULL) {
		fprintf(stderr, "pw_profile: cannot connect to PipeWire: %m\n");
		return 2;
	}
	pw_core_add_listener(d.core, &d.core_listener, &core_events, &d);
	d.registry = pw_core_get_registry(d.core, PW_VERSION_REGISTRY, 0);
	pw_registry_add_listener(d.registry, &d.registry_listener, &registry_events, &d);
	pw_loop_update_timer(l, pw_loop_add_timer(l, on_tick, &d), &one, &one, false);
	end.tv_sec = (time_t)seconds;
	end.tv_nsec = (long)((seconds - end.tv_sec) * 1e9);
	pw_loop_update_timer(l, pw_loop_add_timer(l, on_end, &d), &end, &zero, false);
	pw_main_loop_run(d.loop);
	report(&d);
	printf("pw_profile end%s\n", d.profiler ? "" : " (no profiler: load "
	       "libpipewire-module-profiler)");
	fflush(stdout);
	return 0;
}
