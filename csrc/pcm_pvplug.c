/* SPDX-License-Identifier: MIT
 *
 * libasound_module_pcm_pvplug.so: the ALSA ioplug shim.
 *
 * This file is the preamble of the cffi embedding build
 * (alsa_pvplug/glue/build.py), which also provides the pvplug_py_* functions:
 * they are `extern "Python"` and implemented in alsa_pvplug/glue/embed.py.
 * C keeps to what Python cannot do: the ALSA entry point, walking the
 * snd_config tree, starting the interpreter safely inside an arbitrary host,
 * the ioplug callback table and poll plumbing.  Every decision (constraints,
 * pointer, readiness, xruns) is made in Python.
 *
 * Build-time macros (strings): PVPLUG_LIBPYTHON (soname to promote),
 * PVPLUG_PYTHON_HOME, PVPLUG_PYTHON_EXE, PVPLUG_PYTHON_PATH (the build's
 * site directories, joined by ':').
 */
#include <alsa/asoundlib.h>
#include <alsa/pcm_external.h>
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PVPLUG_MAX_OPTS 32
#define PVPLUG_ERRLEN 512

#include "pvplug_hw.h"
#include "pvplug_fast.h"

/* Implemented in Python (extern "Python"); cffi wants static prototypes. */
#define PVPLUG_PY static
#include "pvplug_py.h"

struct pvplug {
	snd_pcm_ioplug_t io;	/* first member: callbacks get &io */
	int id;			/* key of the Python instance */
	unsigned int forks;	/* pv_forks at open: a forked child must not touch Python */
	struct pvplug_hw hw;
};

#define pv_of(io) ((struct pvplug *)(io)->private_data)

/* After fork() without exec the GIL may be held by a thread that no longer
 * exists; the child fails every call instead of deadlocking.  Forks are
 * counted (pthread_atfork): getpid() is a system call, six a period. */
static volatile unsigned int pv_forks;
static void pv_forked(void) { pv_forks++; }
#define PV_GUARD(pv) do { if ((pv)->forks != pv_forks) return -ENODEV; } while (0)

/* A callback that only hands its arguments to Python. */
#define PV_FORWARD(py, ...) do {				\
		struct pvplug *pv = pv_of(io);			\
		PV_GUARD(pv);					\
		return py(pv->id, ##__VA_ARGS__);		\
	} while (0)

/* --- starting Python inside someone else's process ---------------------- */

static pthread_mutex_t pv_init_lock = PTHREAD_MUTEX_INITIALIZER;
static int pv_init_done;

/* Appends each ':'-separated directory to sys.path (GIL held).  Before
 * cffi starts: it imports _cffi_backend from there before our init code. */
static int pv_extend_path(const char *dirs)
{
	PyObject *path = PySys_GetObject("path");	/* borrowed */

	while (path && *dirs) {
		size_t len = strcspn(dirs, ":");
		PyObject *dir = PyUnicode_DecodeFSDefaultAndSize(dirs, len);

		if (!dir || PyList_Append(path, dir) != 0) {
			Py_XDECREF(dir);
			return -1;
		}
		Py_DECREF(dir);
		dirs += len + (dirs[len] == ':');
	}
	return path ? 0 : -1;
}

static int pv_start_python(char *err, size_t errlen)
{
	int ret = 0;

	pthread_mutex_lock(&pv_init_lock);
	if (pv_init_done)
		goto out;
	/* alsa-lib dlopens us RTLD_LOCAL, which hides libpython's symbols from
	 * the extension modules Python loads (they do not link it):
	 * promote it to global scope before the first import. */
	if (!dlopen(PVPLUG_LIBPYTHON, RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL)) {
		snprintf(err, errlen, "cannot promote %s to global scope: %s",
			 PVPLUG_LIBPYTHON, dlerror());
		ret = -ENOENT;
		goto out;
	}
	if (!Py_IsInitialized()) {
		/* A C host: our interpreter, isolated from the host's
		 * PYTHONHOME/PYTHONPATH, without signal handlers.  No site.py:
		 * the build's site directories are the path (site's .pth
		 * walk, an editable install's finder among them, was a
		 * seventh of the open). */
		PyConfig config;
		PyStatus st;

		PyConfig_InitPythonConfig(&config);
		config.use_environment = 0;
		config.install_signal_handlers = 0;
		config.parse_argv = 0;
		config.site_import = 0;
		st = PyConfig_SetBytesString(&config, &config.home, PVPLUG_PYTHON_HOME);
		if (!PyStatus_Exception(st))
			st = PyConfig_SetBytesString(&config, &config.program_name,
						     PVPLUG_PYTHON_EXE);
		if (!PyStatus_Exception(st))
			st = Py_InitializeFromConfig(&config);
		PyConfig_Clear(&config);
		if (PyStatus_Exception(st)) {
			snprintf(err, errlen, "cannot start Python (home %s): %s%s%s",
				 PVPLUG_PYTHON_HOME, st.func ? st.func : "",
				 st.func ? ": " : "", st.err_msg ? st.err_msg : "unknown error");
			ret = -ENOENT;
			goto out;
		}
		ret = pv_extend_path(PVPLUG_PYTHON_PATH);
		if (ret)
			PyErr_Clear();
		/* cffi's callbacks take the GIL with PyGILState_Ensure. */
		PyEval_SaveThread();
		if (ret) {
			snprintf(err, errlen, "cannot set Python's module path");
			ret = -ENOMEM;
			goto out;
		}
	}
	/* Runs the embedding init code (imports alsa_pvplug.glue.embed).  If
	 * it fails every extern "Python" call would return 0 ("success",
	 * "position 0") and the application would spin: fail the open. */
	if (cffi_start_python() != 0) {
		snprintf(err, errlen, "the plugin's Python code failed to load "
			 "(traceback above; built for %s)", PVPLUG_PYTHON_EXE);
		ret = -ENOENT;
		goto out;
	}
	pthread_atfork(NULL, NULL, pv_forked);
	pv_init_done = 1;
out:
	pthread_mutex_unlock(&pv_init_lock);
	return ret;
}

/* --- callbacks ------------------------------------------------------------ */

static int pv_start(snd_pcm_ioplug_t *io) { PV_FORWARD(pvplug_py_start, io->appl_ptr); }
static int pv_stop(snd_pcm_ioplug_t *io) { PV_FORWARD(pvplug_py_stop); }

static snd_pcm_sframes_t pv_pointer(snd_pcm_ioplug_t *io)
{
	struct pvplug *pv = pv_of(io);
	long r;

	PV_GUARD(pv);
	/* pvplug_fast.h says why this path is in C, and what it decides: nothing */
	if (pv->hw.fast &&
	    (r = pvplug_fast_pointer(pv->hw.fast, io->appl_ptr, pvplug_now())) >= 0)
		return r;
	return pvplug_py_pointer(pv->id, io->appl_ptr);
}

static snd_pcm_sframes_t pv_transfer(snd_pcm_ioplug_t *io,
				     const snd_pcm_channel_area_t *areas,
				     snd_pcm_uframes_t offset,
				     snd_pcm_uframes_t size)
{
	struct pvplug *pv = pv_of(io);
	unsigned int frame_bits;
	char *buf;

	PV_GUARD(pv);
	/* Only interleaved access is offered: one area, frames back to back. */
	frame_bits = snd_pcm_format_physical_width(io->format) * io->channels;
	if (areas[0].first % 8 || areas[0].step != frame_bits)
		return -EINVAL;
	buf = (char *)areas[0].addr + areas[0].first / 8 +
	      offset * (frame_bits / 8);
	if (pv->hw.fast && io->stream == SND_PCM_STREAM_PLAYBACK &&
	    pvplug_fast_transfer(pv->hw.fast, io->appl_ptr, buf, size, pvplug_now()) >= 0)
		return (snd_pcm_sframes_t)size;
	return pvplug_py_transfer(pv->id, io->appl_ptr, buf, size);
}

static int pv_hw_params(snd_pcm_ioplug_t *io, snd_pcm_hw_params_t *params)
{
	PV_FORWARD(pvplug_py_hw_params, io->access, io->format, io->channels, io->rate,
		   io->period_size, io->buffer_size);
}

static int pv_sw_params(snd_pcm_ioplug_t *io, snd_pcm_sw_params_t *params)
{
	struct pvplug *pv = pv_of(io);
	snd_pcm_uframes_t avail_min = 0, start = 0, stop = 0, boundary = 0;

	PV_GUARD(pv);
	snd_pcm_sw_params_get_avail_min(params, &avail_min);
	snd_pcm_sw_params_get_start_threshold(params, &start);
	snd_pcm_sw_params_get_stop_threshold(params, &stop);
	snd_pcm_sw_params_get_boundary(params, &boundary);
	return pvplug_py_sw_params(pv->id, avail_min, start, stop, boundary);
}

static int pv_prepare(snd_pcm_ioplug_t *io) { PV_FORWARD(pvplug_py_prepare); }
static int pv_drain(snd_pcm_ioplug_t *io) { PV_FORWARD(pvplug_py_drain, io->appl_ptr, io->nonblock); }
static int pv_pause(snd_pcm_ioplug_t *io, int enable) { PV_FORWARD(pvplug_py_pause, enable); }

static int pv_delay(snd_pcm_ioplug_t *io, snd_pcm_sframes_t *delayp)
{
	struct pvplug *pv = pv_of(io);
	long d = 0;
	int ret = 0;

	PV_GUARD(pv);
	if (!pv->hw.fast || pvplug_fast_delay(pv->hw.fast, io->appl_ptr, pvplug_now(), &d))
		ret = pvplug_py_delay(pv->id, io->appl_ptr, &d);
	if (ret == 0)
		*delayp = d;
	return ret;
}

static int pv_poll_count(snd_pcm_ioplug_t *io) { return pv_of(io)->hw.n_fds; }

static int pv_poll_descriptors(snd_pcm_ioplug_t *io, struct pollfd *pfd,
			       unsigned int space)
{
	struct pvplug *pv = pv_of(io);
	int i;

	if (space < (unsigned int)pv->hw.n_fds)
		return -EINVAL;
	for (i = 0; i < pv->hw.n_fds; i++) {
		pfd[i].fd = pv->hw.fds[i];
		pfd[i].events = POLLIN;
		pfd[i].revents = 0;
	}
	return pv->hw.n_fds;
}

static int pv_poll_revents(snd_pcm_ioplug_t *io, struct pollfd *pfd,
			   unsigned int nfds, unsigned short *revents)
{
	struct pvplug *pv = pv_of(io);
	unsigned int i;
	int r, fired = 0;

	PV_GUARD(pv);
	/* Python needs to know whether more than its own timer woke us. */
	for (i = 1; i < nfds; i++)
		fired |= pfd[i].revents != 0;
	if (!fired && pv->hw.fast &&
	    pvplug_fast_ready(pv->hw.fast, io->appl_ptr, pvplug_now()) == 1) {
		*revents = io->stream == SND_PCM_STREAM_CAPTURE ? POLLIN : POLLOUT;
		return 0;
	}
	r = pvplug_py_poll_revents(pv->id, io->appl_ptr, fired);
	*revents = r < 0 ? POLLERR : (unsigned short)r;
	/* snd_pcm_wait turns POLLERR into the state's error: make it -EPIPE
	 * (recoverable), not -EIO, when we found an xrun. */
	if ((*revents & POLLERR) && io->state == SND_PCM_STATE_RUNNING)
		snd_pcm_ioplug_set_state(io, SND_PCM_STATE_XRUN);
	return 0;
}

static int pv_hw_free(snd_pcm_ioplug_t *io) { PV_FORWARD(pvplug_py_hw_free); }

static int pv_close(snd_pcm_ioplug_t *io)
{
	struct pvplug *pv = pv_of(io);

	if (pv->forks == pv_forks)
		pvplug_py_close(pv->id);
	free(pv);
	return 0;
}

static const snd_pcm_ioplug_callback_t pv_callbacks = {
	.start = pv_start,
	.stop = pv_stop,
	.pointer = pv_pointer,
	.transfer = pv_transfer,
	.close = pv_close,
	.hw_params = pv_hw_params,
	.hw_free = pv_hw_free,
	.sw_params = pv_sw_params,
	.prepare = pv_prepare,
	.drain = pv_drain,
	.pause = pv_pause,
	.poll_descriptors_count = pv_poll_count,
	.poll_descriptors = pv_poll_descriptors,
	.poll_revents = pv_poll_revents,
	.delay = pv_delay,
};

/* --- open --------------------------------------------------------------- */

/* Every option reaches Python as a string; Python validates names and values
 * so that the rules live (and are unit-tested) in one place. */
static int pv_collect_options(snd_config_t *conf, int *n, const char **keys,
			      const char **values, char *store, size_t storelen,
			      char *err, size_t errlen)
{
	snd_config_iterator_t i, next;
	size_t used = 0;

	*n = 0;
	snd_config_for_each(i, next, conf) {
		snd_config_t *c = snd_config_iterator_entry(i);
		const char *id;
		char *text = NULL;
		size_t len;

		if (snd_config_get_id(c, &id) < 0 || !strcmp(id, "comment") ||
		    !strcmp(id, "type") || !strcmp(id, "hint"))
			continue;
		if (snd_config_get_type(c) == SND_CONFIG_TYPE_COMPOUND) {
			snprintf(err, errlen, "option '%s' must be a single value, "
				 "not a block", id);
			return -EINVAL;
		}
		if (snd_config_get_ascii(c, &text) < 0 || !text) {
			snprintf(err, errlen, "option '%s' has an unreadable value", id);
			return -EINVAL;
		}
		len = strlen(id) + strlen(text) + 2;
		if (*n >= PVPLUG_MAX_OPTS || used + len > storelen) {
			free(text);
			snprintf(err, errlen, "too many options (at '%s')", id);
			return -EINVAL;
		}
		keys[*n] = strcpy(store + used, id);
		used += strlen(id) + 1;
		values[*n] = strcpy(store + used, text);
		used += strlen(text) + 1;
		free(text);
		(*n)++;
	}
	return 0;
}

static int pv_apply_constraints(snd_pcm_ioplug_t *io, const struct pvplug_hw *hw)
{
	static const unsigned int access[] = {
		SND_PCM_ACCESS_RW_INTERLEAVED, SND_PCM_ACCESS_MMAP_INTERLEAVED,
	};
	const struct { int type; unsigned int lo, hi; } range[] = {
		{ SND_PCM_IOPLUG_HW_CHANNELS, hw->channels_min, hw->channels_max },
		{ SND_PCM_IOPLUG_HW_PERIOD_BYTES, hw->period_bytes_min, hw->period_bytes_max },
		{ SND_PCM_IOPLUG_HW_BUFFER_BYTES, hw->buffer_bytes_min, hw->buffer_bytes_max },
		{ SND_PCM_IOPLUG_HW_PERIODS, hw->periods_min, hw->periods_max },
	};
	unsigned int i;
	int err;

	err = snd_pcm_ioplug_set_param_list(io, SND_PCM_IOPLUG_HW_ACCESS, 2, access);
	if (err >= 0)
		err = snd_pcm_ioplug_set_param_list(io, SND_PCM_IOPLUG_HW_FORMAT,
						    hw->n_formats, hw->formats);
	if (err >= 0)
		err = snd_pcm_ioplug_set_param_list(io, SND_PCM_IOPLUG_HW_RATE,
						    hw->n_rates, hw->rates);
	for (i = 0; err >= 0 && i < sizeof(range) / sizeof(range[0]); i++)
		err = snd_pcm_ioplug_set_param_minmax(io, range[i].type, range[i].lo,
						      range[i].hi);
	return err;
}

SND_PCM_PLUGIN_DEFINE_FUNC(pvplug)
{
	const char *keys[PVPLUG_MAX_OPTS], *values[PVPLUG_MAX_OPTS];
	char store[4096], err[PVPLUG_ERRLEN] = "";
	struct pvplug *pv;
	int nopts = 0, ret;

	ret = pv_collect_options(conf, &nopts, keys, values, store, sizeof(store), err,
				 sizeof(err));
	if (ret >= 0)
		ret = pv_start_python(err, sizeof(err));
	if (ret < 0) {
		SNDERR("pvplug %s: %s", name, err);
		return ret;
	}
	pv = calloc(1, sizeof(*pv));
	if (!pv)
		return -ENOMEM;
	pv->forks = pv_forks;
	ret = pvplug_py_open(name, stream, mode, nopts, keys, values, &pv->hw,
			     err, sizeof(err));
	if (ret < 0) {
		SNDERR("pvplug %s: %s", name, err[0] ? err : strerror(-ret));
		free(pv);
		return ret;
	}
	pv->id = ret;

	pv->io.version = SND_PCM_IOPLUG_VERSION;
	pv->io.name = "pvplug: Xen para-virtual sound";
	pv->io.callback = &pv_callbacks;
	pv->io.private_data = pv;
	pv->io.poll_fd = pv->hw.fds[0];
	pv->io.poll_events = POLLIN;
	pv->io.mmap_rw = 0;
	pv->io.flags = SND_PCM_IOPLUG_FLAG_BOUNDARY_WA | SND_PCM_IOPLUG_FLAG_MONOTONIC;

	ret = snd_pcm_ioplug_create(&pv->io, name, stream, mode);
	if (ret < 0) {
		SNDERR("pvplug %s: snd_pcm_ioplug_create: %s", name, snd_strerror(ret));
		pvplug_py_close(pv->id);
		free(pv);
		return ret;
	}
	ret = pv_apply_constraints(&pv->io, &pv->hw);
	if (ret < 0) {
		SNDERR("pvplug %s: constraints: %s", name, snd_strerror(ret));
		snd_pcm_ioplug_delete(&pv->io);	/* calls pv_close */
		return ret;
	}
	*pcmp = pv->io.pcm;
	return 0;
}

SND_PCM_PLUGIN_SYMBOL(pvplug);
