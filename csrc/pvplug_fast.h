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
 * A playback transfer also sends the period's WRITE itself when Python has
 * handed it request ids and the event channel (the simulator's; a WRITE
 * round trip through Python cost ~0.3 ms of the audio thread per period).
 * Python takes in what C sent before it touches the ring again
 * (glue/pcm.py _adopt_outside, under `claim`), and every adoption takes the
 * ids back until Python publishes new ones.
 *
 * Read by the compiler (pcm_pvplug.c, pvplug_native.h) and by cffi's cdef:
 * the struct definition below the marker line is plain C.
 */
#ifndef PVPLUG_FAST_H
#define PVPLUG_FAST_H

#include <stdint.h>
#include <string.h>
#include <math.h>
#include <sched.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

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
	int64_t flush_frames;	/* this many unannounced frames: a WRITE is due */
	double flush_at;	/* or from this time on; but without a write, */
	double write_grace;	/* after this too (frontend.py WRITE_GRACE) */
	double ready_at;	/* POLLOUT given (Stream.note_ready): the next */
	double wrote_at;	/* write (later than this one) is due */
	/* WRITEs C sends (ring NULL or no ids left: Python sends them).  Only
	 * touched under `claim`, not in the snapshot. */
	char *ring;		/* the request ring's shared page */
	const char *evt;	/* the event page: a CUR_POS there is Python's */
	uint32_t req_prod;	/* next request index (Python's req_prod_pvt) */
	uint32_t claim;		/* 1 while C or Python works on what follows */
	uint32_t n_ids;		/* ids[0..n_ids): request ids C may use, in order */
	uint32_t n_sent;	/* C used ids[0..n_sent) for these frames: */
	uint16_t ids[64];	/* (Stream.MAX_OUTSIDE_IDS) */
	int64_t sent_start[64];
	int64_t sent_end[64];
	double sent_at;		/* when C last sent */
	double half_period;	/* s: a WRITE is due this long after the last */
	double low_base;	/* or once the backend runs low, at */
	double rate;		/*   low_base + end of what was sent / rate */
	int32_t notify_lost;	/* the channel changed: Python notifies again */
	int32_t peer_fd;	/* the simulated event channel (pvplug_evtchn_notify) */
	const uint32_t *epoch_word;
	uint32_t *peer;
	uint32_t epoch;
	/* the poll timer (glue/pcm.py _rearm), which a transfer here re-arms */
	int32_t timer_fd;	/* -1: only Python arms it */
	double armed;		/* when it was last armed for (0: disarmed) */
	int64_t period;
	double wake_min;	/* s: no wake sooner than this after now */
	double wake_max;	/*    nor later */
	/* Reports and answers Python has not taken yet still move the
	 * pointer's bounds (lo, hi): at most `slack` past the newest report C
	 * sees, never past the newest answered WRITE.  Under `claim`. */
	int64_t reported;	/* the last report Python took (frames) */
	int64_t slack;
	int64_t data_end;	/* the end of the WRITEs answered when Python looked */
	uint32_t rsp_cons;	/* the ring's consumer index (C raises it) */
	uint32_t n_wr;		/* WRITEs in flight (ids, ends), Python's and C's */
	uint16_t wr_ids[24];
	int64_t wr_ends[24];
	uint32_t n_ans;		/* successful answers to those C took off the */
	uint16_t ans_ids[88];	/* ring, in ring order (Python adopts them): */
				/* as many as ids and wr_ids together */
	uint32_t evt_seen_prod;	/* the event page's in_prod C last saw */
	uint32_t evt_seen_idx[64];	/* in_prod q was first seen by C at */
	double evt_seen_at[64];		/* [q % 64] (the reports' times for the clock fit) */
};
/* cdef-end */

/* The simulated event channels' state bits (pvplug_native.h). */
#define PVPLUG_EVTCHN_PENDING	1u
#define PVPLUG_EVTCHN_MASKED	2u

/* The sndif ring (docs/protocol.md): a 64-octet header (req_prod, req_event,
 * ...), then 32 slots of 64 octets; a READ/WRITE request is id (u16),
 * operation (u8), 5 reserved octets, offset and length (u32). */
#define PVPLUG_NELEM(a)		(sizeof(a) / sizeof((a)[0]))
#define PVPLUG_RING_HEADER	64
#define PVPLUG_RING_SLOTS	32
#define PVPLUG_RING_REQ_EVENT	4
#define PVPLUG_RING_RSP_PROD	8
#define PVPLUG_EVT_SLOTS	63	/* the event page: 63 slots after its header */
#define PVPLUG_EVT_CUR_POS	0
#define PVPLUG_SLOT_SIZE	64
#define PVPLUG_OP_WRITE		3

/*
 * xenevtchn_notify: if our port's epoch is still `expect`, set PENDING on
 * the peer's word and, when that makes it newly pending and unmasked, write
 * one byte to the peer's wake pipe.  Never blocks (O_NONBLOCK on our own
 * description); a full pipe means the peer is awake anyway.  Returns 1 when
 * the epoch moved on (the caller resyncs), else 0.  `peer` NULL: unbound,
 * the notify is dropped as Xen's evtchn_send does.
 */
static int pvplug_evtchn_notify(const uint32_t *epoch, uint32_t expect,
				uint32_t *peer, int peer_fd)
{
	uint32_t old;
	char byte = 0;
	ssize_t ret = 0;

	if (__atomic_load_n(epoch, __ATOMIC_ACQUIRE) != expect)
		return 1;
	if (!peer)
		return 0;
	/* SEQ_CST: everything written before the notify (ring slots and
	 * indexes) is visible to the peer once it sees the bit. */
	old = __atomic_fetch_or(peer, PVPLUG_EVTCHN_PENDING, __ATOMIC_SEQ_CST);
	if (!(old & (PVPLUG_EVTCHN_PENDING | PVPLUG_EVTCHN_MASKED)))
		ret = write(peer_fd, &byte, 1);
	(void)ret;
	return 0;
}

/* Arm the timerfd for CLOCK_MONOTONIC time `when` (s; 0 disarms). */
static int pvplug_timer_arm(int fd, double when)
{
	struct itimerspec its = { { 0, 0 }, { 0, 0 } };

	if (when > 0) {
		its.it_value.tv_sec = (time_t)when;
		its.it_value.tv_nsec = (long)((when - (double)its.it_value.tv_sec) * 1e9);
		if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
			its.it_value.tv_nsec = 1;
	}
	return timerfd_settime(fd, TFD_TIMER_ABSTIME, &its, NULL);
}

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

/* C's side of `claim`: never waits (Python may hold it: ask Python). */
static int pvplug_fast_try_claim(struct pvplug_fast *f)
{
	uint32_t free_ = 0;

	return __atomic_compare_exchange_n(&f->claim, &free_, 1, 0, __ATOMIC_ACQUIRE,
					   __ATOMIC_RELAXED);
}

/* Python's side: C holds it for a few stores, never across a wait. */
static void pvplug_fast_claim(struct pvplug_fast *f)
{
	while (!pvplug_fast_try_claim(f))
		sched_yield();
}

static void pvplug_fast_unclaim(struct pvplug_fast *f)
{
	__atomic_store_n(&f->claim, 0, __ATOMIC_RELEASE);
}

static void pvplug_put_u32(char *p, uint32_t v) { memcpy(p, &v, 4); }

static void pvplug_fast_seen_bounds(struct pvplug_fast *f);

/* Under `claim`: whether C may send WRITEs for frames [first, end) of the
 * buffer (one, or two where it wraps), as Stream._send_writes would: with
 * ids left, and at most as many in flight as C can take the answers of
 * (wr_ids; it takes those it can first). */
static int pvplug_fast_can_send(struct pvplug_fast *f, int64_t first, int64_t end)
{
	int64_t off = first % f->buffer, cnt = end - first;
	uint32_t pieces = off + cnt > f->buffer ? 2 : 1;

	if (!f->ring || !f->peer || f->n_sent + pieces > f->n_ids || cnt <= 0 ||
	    cnt > f->buffer || f->rate <= 0)
		return 0;
	if (f->req_prod - f->rsp_cons + pieces > PVPLUG_NELEM(f->wr_ids))
		pvplug_fast_seen_bounds(f);
	return f->req_prod - f->rsp_cons + pieces <= PVPLUG_NELEM(f->wr_ids) &&
	       f->n_wr + pieces <= PVPLUG_NELEM(f->wr_ids);
}

/* Send them; 0, or -1 (nothing sent: C may not). */
static int pvplug_fast_send(struct pvplug_fast *f, int64_t first, int64_t end, double now)
{
	int64_t piece;
	uint32_t old, event;
	char *slot;

	if (!pvplug_fast_can_send(f, first, end))
		return -1;
	old = __atomic_load_n((uint32_t *)f->ring, __ATOMIC_RELAXED);
	while (first < end) {	/* split where the buffer wraps */
		piece = f->buffer - first % f->buffer;
		if (piece > end - first)
			piece = end - first;
		slot = f->ring + PVPLUG_RING_HEADER +
		       (f->req_prod % PVPLUG_RING_SLOTS) * PVPLUG_SLOT_SIZE;
		memset(slot, 0, PVPLUG_SLOT_SIZE);
		memcpy(slot, &f->ids[f->n_sent], 2);
		slot[2] = PVPLUG_OP_WRITE;
		pvplug_put_u32(slot + 8, (uint32_t)(first % f->buffer * f->frame_bytes));
		pvplug_put_u32(slot + 12, (uint32_t)(piece * f->frame_bytes));
		f->sent_start[f->n_sent] = first;
		f->sent_end[f->n_sent] = first + piece;
		f->wr_ids[f->n_wr] = f->ids[f->n_sent];	/* C takes its answer */
		f->wr_ends[f->n_wr++] = first + piece;
		f->n_sent++;
		f->req_prod++;
		first += piece;
	}
	/* ring.h RING_PUSH_REQUESTS_AND_CHECK_NOTIFY: frames and requests
	 * before the index, the index before looking at req_event. */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	__atomic_store_n((uint32_t *)f->ring, f->req_prod, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	event = __atomic_load_n((uint32_t *)(f->ring + PVPLUG_RING_REQ_EVENT), __ATOMIC_RELAXED);
	if ((uint32_t)(f->req_prod - event) < (uint32_t)(f->req_prod - old) &&
	    pvplug_evtchn_notify(f->epoch_word, f->epoch, f->peer, f->peer_fd))
		f->notify_lost = 1;
	f->dirty_from = -1;
	f->sent_at = now;
	f->flush_at = fmin(now + f->half_period, f->low_base + (double)end / f->rate);
	return 0;
}

static int pvplug_fast_events_seen(struct pvplug_fast *f);

/* The snapshot, the absolute position and appl at `now`; -1: ask Python. */
static int pvplug_fast_eval(struct pvplug_fast *f, unsigned long appl_mod, double now,
			    struct pvplug_fast *s, int64_t *pos, int64_t *appl)
{
	int64_t delta, est, hw, lo, hi;

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
		if (!pvplug_fast_try_claim(f))
			return -1;
		if (pvplug_fast_events_seen(f) == 2 || est >= f->hi)
			pvplug_fast_seen_bounds(f);
		lo = f->lo;
		hi = f->hi;
		pvplug_fast_unclaim(f);
		if (est >= hi)
			return -1;
		if (est < lo)
			est = lo;
	}
	hw = __atomic_load_n(&f->hw, __ATOMIC_RELAXED);
	*pos = est < hw ? hw : est;
	return 0;
}

static int64_t pvplug_fast_avail(const struct pvplug_fast *s, int64_t pos, int64_t appl)
{
	return s->capture ? pos - appl : s->buffer - (appl - pos);
}

/* Under `claim`: whether the event page holds events Python has not
 * taken (in_prod != in_cons): 0 none, 1 yes, 2 yes and new since C last
 * looked.  Notes when C first saw the newest, which is the time the
 * position clock fits for it when Python takes it. */
static int pvplug_fast_events_seen(struct pvplug_fast *f)
{
	uint32_t prod, q;
	double at;

	if (!f->evt)
		return 0;
	prod = __atomic_load_n((const uint32_t *)(f->evt + 4), __ATOMIC_ACQUIRE);
	if (prod == __atomic_load_n((const uint32_t *)f->evt, __ATOMIC_RELAXED))
		return 0;
	if (prod == f->evt_seen_prod)
		return 1;
	/* The time now, after in_prod was read, not the caller's: a report
	 * stamped before it was there would pull the clock's line ahead. */
	at = pvplug_now();
	for (q = prod; q != f->evt_seen_prod && prod - q < 64; q--) {
		f->evt_seen_idx[q % 64] = q;
		f->evt_seen_at[q % 64] = at;
	}
	f->evt_seen_prod = prod;
	return 2;
}

/* Under `claim`: the pointer's bounds from what the rings hold now (the
 * newest CUR_POS, the WRITE answers), as Python computes them (glue/pcm.py
 * _publish).  Successful answers to the WRITEs C knows are taken off the
 * ring, in order, up to the first other one: Python adopts them (the ids
 * in ans_ids) as if it had taken them, and takes the rest itself.  Only
 * ever raises the bounds Python published, and a lying backend only as far
 * as the WRITEs it answered: Python judges the reports when it takes them. */
static void pvplug_fast_seen_bounds(struct pvplug_fast *f)
{
	uint32_t cons, prod, j;
	int64_t rep = f->reported, end, pos;
	uint64_t octets;
	const char *slot;
	int32_t status;
	uint16_t id;

	if (f->evt && f->frame_bytes > 0) {
		cons = __atomic_load_n((const uint32_t *)f->evt, __ATOMIC_RELAXED);
		prod = __atomic_load_n((const uint32_t *)(f->evt + 4), __ATOMIC_ACQUIRE);
		if (prod != cons && prod - cons <= PVPLUG_EVT_SLOTS) {
			slot = f->evt + PVPLUG_RING_HEADER +
			       ((prod - 1) % PVPLUG_EVT_SLOTS) * PVPLUG_SLOT_SIZE;
			memcpy(&octets, slot + 8, 8);
			pos = (int64_t)(octets / (uint64_t)f->frame_bytes);
			if (slot[2] == PVPLUG_EVT_CUR_POS && pos > rep && octets < (1ull << 62))
				rep = pos;
		}
	}
	prod = f->ring ? __atomic_load_n((const uint32_t *)(f->ring + PVPLUG_RING_RSP_PROD),
					 __ATOMIC_ACQUIRE) : f->rsp_cons;
	/* (ring.h RING_RESPONSE_PROD_OVERFLOW: never more than were asked) */
	while (prod != f->rsp_cons && prod - f->rsp_cons <= f->req_prod - f->rsp_cons &&
	       f->n_ans < PVPLUG_NELEM(f->ans_ids)) {
		slot = f->ring + PVPLUG_RING_HEADER +
		       (f->rsp_cons % PVPLUG_RING_SLOTS) * PVPLUG_SLOT_SIZE;
		memcpy(&id, slot, 2);
		memcpy(&status, slot + 4, 4);
		for (j = 0; j < f->n_wr && f->wr_ids[j] != id; j++)
			;
		if (slot[2] != PVPLUG_OP_WRITE || status != 0 || j == f->n_wr)
			break;
		f->ans_ids[f->n_ans++] = id;
		if (f->wr_ends[j] > f->data_end)
			f->data_end = f->wr_ends[j];
		f->n_wr--;	/* answered: out of the table */
		f->wr_ids[j] = f->wr_ids[f->n_wr];
		f->wr_ends[j] = f->wr_ends[f->n_wr];
		f->rsp_cons++;
	}
	end = f->data_end;
	if ((rep < end ? rep : end) > f->lo)
		f->lo = rep < end ? rep : end;
	if (rep + f->slack < end)
		end = rep + f->slack;
	if (end > f->hi)
		f->hi = end;
}

/* Send what waits for its WRITE; 0, or -1: Python does. */
static int pvplug_fast_flush(struct pvplug_fast *f, double now)
{
	int ret = -1;

	if (!pvplug_fast_try_claim(f))
		return -1;
	if (f->buf && f->dirty_from >= 0 && f->wr_end > f->dirty_from)
		ret = pvplug_fast_send(f, f->dirty_from, f->wr_end, now);
	pvplug_fast_unclaim(f);
	return ret;
}

/* The position (absolute) if no decision is due, else -1; raises f->hw. */
static int64_t pvplug_fast_position(struct pvplug_fast *f, unsigned long appl_mod,
				    double now, struct pvplug_fast *s, int64_t *appl)
{
	int64_t pos, old;

	if (pvplug_fast_eval(f, appl_mod, now, s, &pos, appl) < 0)
		return -1;
	if (s->capture && pvplug_fast_try_claim(f)) {
		/* Only note the time: Python sends READs when it is entered (a
		 * client short of frames always enters it). */
		pvplug_fast_events_seen(f);
		pvplug_fast_unclaim(f);
	}
	if (s->dirty_from >= 0 && now >= s->flush_at + s->write_grace &&
	    pvplug_fast_flush(f, now) < 0)
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

	if (pos < 0 || pvplug_fast_avail(&s, pos, appl) < s.avail_min)
		return -1;
	if (!s.capture)
		f->ready_at = now;
	return 1;
}

/* After a playback transfer: arm the poll timer for when avail reaches
 * avail_min again, not before the next period boundary (PcmModel.next_wake,
 * PvPcm._rearm), or leave it readable while the stream is ready. */
static void pvplug_fast_rearm(struct pvplug_fast *f, const struct pvplug_fast *s,
			      int64_t pos, int64_t appl, double now)
{
	int64_t target, boundary;
	double due;

	if (f->timer_fd < 0 || s->slope <= 0 || f->period <= 0)
		return;
	if (pvplug_fast_avail(s, pos, appl) >= s->avail_min) {
		if (!(f->armed > 0 && f->armed <= now + 0.0001))
			pvplug_timer_arm(f->timer_fd, f->armed = 1.0);
		return;
	}
	target = appl - s->buffer + s->avail_min;
	boundary = (pos / f->period + 1) * f->period;
	if (target < boundary)
		target = boundary;
	due = ((double)target - s->intercept) / s->slope;
	due = fmin(fmax(due, now + f->wake_min), now + f->wake_max);
	if (f->dirty_from >= 0)	/* Stream.flush_due */
		due = fmin(due, fmax(now < f->flush_at ? f->flush_at :
				     f->flush_at + f->write_grace, now + 0.0005));
	if (fabs(due - f->armed) > 0.0001)
		pvplug_timer_arm(f->timer_fd, f->armed = due);
}

/* Copy `frames` frames for ALSA position appl_mod into the shared buffer,
 * and send the WRITE when one is due and C may; returns frames, or -1:
 * Python does the transfer (a rewind, a WRITE C may not send). */
static long pvplug_fast_transfer(struct pvplug_fast *f, unsigned long appl_mod,
				 const char *src, unsigned long frames, double now)
{
	struct pvplug_fast s;
	int64_t pos, appl, first, end, off, n, done = 0;
	long ret = -1;
	int due;

	if (pvplug_fast_eval(f, appl_mod, now, &s, &pos, &appl) < 0 || s.capture ||
	    (int64_t)frames > s.buffer || !pvplug_fast_try_claim(f))
		return -1;
	/* The live fields: an adoption may have taken the buffer back. */
	if (!f->buf || appl != f->wr_end)
		goto out;
	first = f->dirty_from < 0 ? appl : f->dirty_from;
	end = appl + (int64_t)frames;
	due = end - first >= f->flush_frames || now >= f->flush_at ||
	      f->ready_at > f->wrote_at;
	if (due && !pvplug_fast_can_send(f, first, end))
		goto out;
	while (done < (int64_t)frames) {
		off = (appl + done) % f->buffer;
		n = f->buffer - off;
		if (n > (int64_t)frames - done)
			n = (int64_t)frames - done;
		memcpy(f->buf + off * f->frame_bytes, src + done * f->frame_bytes,
		       (size_t)(n * f->frame_bytes));
		done += n;
	}
	f->dirty_from = first;
	f->wr_end = end;
	f->appl = end;
	f->wrote_at = now;
	if (due)
		pvplug_fast_send(f, first, end, now);
	pvplug_fast_rearm(f, &s, pos, end, now);
	ret = (long)frames;
out:
	pvplug_fast_unclaim(f);
	return ret;
}

#endif /* PVPLUG_FAST_H */
