/* SPDX-License-Identifier: MIT
 *
 * The pointer's fast path: answering pointer, delay and "ready?" from the
 * position model Python last published, without entering Python.
 *
 * Why in C: on the machines we measure (2 vCPUs under a hypervisor) one
 * entry into Python costs 3 us hot and 15-20 us after the audio thread has
 * slept, and clients call pointer several times a period (avail_update,
 * status, delay) -- 150x alsa-lib's null plugin and 10 % of a core at
 * 256-frame periods (bench/run.py, bench/datapath.py cpu).  The decisions stay
 * in Python (alsa_pvplug/protocol/pcm.py): it publishes a line and its
 * bounds; this code only evaluates them and hands every case that needs a
 * decision (a bound reached, an xrun, a stale model) back to Python by
 * returning -1.
 *
 * Read by the compiler (pcm_pvplug.c, pvplug_native.h) and by cffi's cdef:
 * the struct definition below the marker line is plain C.
 */
#ifndef PVPLUG_FAST_H
#define PVPLUG_FAST_H

#include <stdint.h>
#include <string.h>
#include <math.h>
#include <time.h>

/* cdef-begin */
struct pvplug_fast {
	uint32_t seq;		/* odd while Python writes (a seqlock) */
	int32_t enabled;	/* 0: every call goes to Python */
	int32_t capture;
	int32_t pad;
	int64_t buffer;		/* frames */
	int64_t boundary;
	int64_t stop_threshold;
	int64_t avail_min;
	int64_t appl;		/* absolute appl_ptr Python last saw */
	int64_t hw;		/* the pointer handed out, absolute (C raises it) */
	int64_t lo;		/* the pointer is at least this (capture: all of it) */
	int64_t hi;		/* beyond this Python decides (clamps, dry, stall) */
	double slope;		/* frames = slope * t + intercept (t: CLOCK_MONOTONIC s) */
	double intercept;
	double valid_until;	/* from then on Python looks again */
	/* playback transfers that only copy (no WRITE due yet) */
	char *buf;		/* the shared buffer; NULL: transfers go to Python */
	int64_t frame_bytes;
	int64_t wr_end;		/* end of the data in the buffer (frames) */
	int64_t dirty_from;	/* first frame not announced by a WRITE, or -1 */
	int64_t flush_frames;	/* this many unannounced frames: Python sends a WRITE */
	double flush_at;	/* or from this time on */
};
/* cdef-end */

static double pvplug_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void pvplug_fast_begin(struct pvplug_fast *f)
{
	__atomic_store_n(&f->seq, f->seq + 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);	/* odd /before/ the fields */
}

static void pvplug_fast_end(struct pvplug_fast *f)
{
	__atomic_thread_fence(__ATOMIC_RELEASE);	/* fields /before/ even */
	__atomic_store_n(&f->seq, f->seq + 1, __ATOMIC_RELAXED);
}

/* A consistent copy of *f, or 0 if Python is writing it now. */
static int pvplug_fast_snapshot(const struct pvplug_fast *f, struct pvplug_fast *out)
{
	uint32_t s = __atomic_load_n(&f->seq, __ATOMIC_ACQUIRE);

	if (s & 1)
		return 0;
	*out = *f;
	__atomic_thread_fence(__ATOMIC_ACQUIRE);	/* copy /before/ re-check */
	return __atomic_load_n(&f->seq, __ATOMIC_RELAXED) == s;
}

/* The snapshot, the absolute position and appl at `now`; -1: ask Python. */
static int pvplug_fast_eval(struct pvplug_fast *f, unsigned long appl_mod, double now,
			    struct pvplug_fast *s, int64_t *pos, int64_t *appl)
{
	int64_t delta, est, hw;

	if (!pvplug_fast_snapshot(f, s) || !s->enabled || now >= s->valid_until ||
	    s->boundary <= 0)
		return -1;
	/* Follow appl_ptr (modulo the boundary) forwards or back, as
	 * PcmModel.set_appl does. */
	delta = ((int64_t)appl_mod - s->appl % s->boundary) % s->boundary;
	if (delta < 0)
		delta += s->boundary;
	if (delta > s->boundary / 2)
		delta -= s->boundary;
	*appl = s->appl + delta;
	if (s->capture) {
		est = s->lo;
	} else {
		est = (int64_t)floor(s->slope * now + s->intercept);
		if (est >= s->hi)
			return -1;
		if (est < s->lo)
			est = s->lo;
	}
	hw = __atomic_load_n(&f->hw, __ATOMIC_RELAXED);
	*pos = est < hw ? hw : est;
	return 0;
}

static int64_t pvplug_fast_avail(const struct pvplug_fast *s, int64_t pos, int64_t appl)
{
	return s->capture ? pos - appl : s->buffer - (appl - pos);
}

/* The position (absolute) if no decision is due, else -1; raises f->hw. */
static int64_t pvplug_fast_position(struct pvplug_fast *f, unsigned long appl_mod,
				    double now, struct pvplug_fast *s, int64_t *appl)
{
	int64_t pos, old;

	if (pvplug_fast_eval(f, appl_mod, now, s, &pos, appl) < 0)
		return -1;
	if (s->dirty_from >= 0 && now >= s->flush_at)
		return -1;	/* frames copied here wait for their WRITE */
	if (s->stop_threshold < s->boundary &&
	    pvplug_fast_avail(s, pos, *appl) >= s->stop_threshold)
		return -1;	/* an xrun: Python says so */
	old = __atomic_load_n(&f->hw, __ATOMIC_RELAXED);
	while (old < pos &&
	       !__atomic_compare_exchange_n(&f->hw, &old, pos, 0, __ATOMIC_RELAXED,
					    __ATOMIC_RELAXED))
		;
	return pos;
}

/* ioplug's pointer: the position modulo the boundary, or -1. */
static long pvplug_fast_pointer(struct pvplug_fast *f, unsigned long appl_mod, double now)
{
	struct pvplug_fast s;
	int64_t appl, pos = pvplug_fast_position(f, appl_mod, now, &s, &appl);

	return pos < 0 ? -1 : (long)(pos % s.boundary);
}

/* Frames between the application and the sound (0), or -1 (ask Python). */
static int pvplug_fast_delay(struct pvplug_fast *f, unsigned long appl_mod, double now,
			     long *delay)
{
	struct pvplug_fast s;
	int64_t appl, pos = pvplug_fast_position(f, appl_mod, now, &s, &appl), d;

	if (pos < 0 || s.capture)
		return -1;
	d = appl - pos;
	*delay = (long)(d > s.boundary ? s.boundary : d < -s.boundary ? -s.boundary : d);
	return 0;
}

/* 1: ready (avail >= avail_min); -1: ask Python (not ready, or a decision). */
static int pvplug_fast_ready(struct pvplug_fast *f, unsigned long appl_mod, double now)
{
	struct pvplug_fast s;
	int64_t appl, pos = pvplug_fast_position(f, appl_mod, now, &s, &appl);

	if (pos < 0)
		return -1;
	return pvplug_fast_avail(&s, pos, appl) >= s.avail_min ? 1 : -1;
}

/* Copy `frames` frames for ALSA position appl_mod into the shared buffer
 * when that is all there is to do (no WRITE due, no rewind); returns frames,
 * or -1: Python does the transfer. */
static long pvplug_fast_transfer(struct pvplug_fast *f, unsigned long appl_mod,
				 const char *src, unsigned long frames, double now)
{
	struct pvplug_fast s;
	int64_t pos, appl, first, off, n, done = 0;

	if (pvplug_fast_eval(f, appl_mod, now, &s, &pos, &appl) < 0 || s.capture ||
	    !s.buf || appl != s.wr_end || now >= s.flush_at)
		return -1;
	first = s.dirty_from < 0 ? appl : s.dirty_from;
	if (appl + (int64_t)frames - first >= s.flush_frames)
		return -1;
	while (done < (int64_t)frames) {
		off = (appl + done) % s.buffer;
		n = s.buffer - off;
		if (n > (int64_t)frames - done)
			n = (int64_t)frames - done;
		memcpy(s.buf + off * s.frame_bytes, src + done * s.frame_bytes,
		       (size_t)(n * s.frame_bytes));
		done += n;
	}
	/* Only this PCM's callbacks (serialised by alsa-lib) write these. */
	f->dirty_from = first;
	f->wr_end = appl + (int64_t)frames;
	f->appl = appl + (int64_t)frames;
	return (long)frames;
}

#endif /* PVPLUG_FAST_H */
