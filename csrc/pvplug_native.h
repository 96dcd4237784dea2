/* SPDX-License-Identifier: MIT
 *
 * Shared-memory index access for the sndif rings, the page mapping the
 * simulated grant table needs, and the simulated event channels' bits.
 * Python fills and copies whole 64-byte slots; every load/store of a ring
 * index or an event bit and every barrier happens here, because Python
 * cannot order memory accesses (docs/protocol.md section 5.5).
 */
#ifndef PVPLUG_NATIVE_H
#define PVPLUG_NATIVE_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "pvplug_fast.h"

static uint32_t pvplug_load_u32(const void *base, size_t off)
{
	return __atomic_load_n((const uint32_t *)((const char *)base + off),
			       __ATOMIC_RELAXED);
}

static void pvplug_store_u32(void *base, size_t off, uint32_t val)
{
	__atomic_store_n((uint32_t *)((char *)base + off), val,
			 __ATOMIC_RELAXED);
}

/* Full barrier: x86-64 xen_mb() is a locked op; SEQ_CST emits mfence/dmb. */
static void pvplug_mb(void)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* Loads before later loads (xen_rmb). */
static void pvplug_rmb(void)
{
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
}

/* Stores before later stores (xen_wmb). */
static void pvplug_wmb(void)
{
	__atomic_thread_fence(__ATOMIC_RELEASE);
}

/*
 * Reserve `pages` contiguous pages of address space (no access), so that the
 * simulated grant mapper can place each granted page at a fixed address the
 * way xengnttab_map_domain_grant_refs returns one contiguous range.
 */
static void *pvplug_reserve_pages(size_t pages)
{
	void *p = mmap(NULL, pages * 4096, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

/* Map one page of `fd` at `offset` over page `index` of a reservation. */
static int pvplug_map_page_at(void *base, size_t index, int fd,
			      int64_t offset, int writable)
{
	int prot = PROT_READ | (writable ? PROT_WRITE : 0);
	void *want = (char *)base + index * 4096;
	void *got = mmap(want, 4096, prot, MAP_SHARED | MAP_FIXED, fd,
			 (off_t)offset);
	return got == MAP_FAILED ? -1 : 0;
}

static int pvplug_unmap_pages(void *base, size_t pages)
{
	return munmap(base, pages * 4096);
}

/* Map `pages` pages of `fd` from offset 0 (shared); NULL on failure. */
static void *pvplug_map_fd(int fd, size_t pages, int writable)
{
	int prot = PROT_READ | (writable ? PROT_WRITE : 0);
	void *p = mmap(NULL, pages * 4096, prot, MAP_SHARED, fd, 0);

	return p == MAP_FAILED ? NULL : p;
}

/*
 * Simulated event channels (alsa_pvplug/transport/sim.py has the design).
 *
 * Each end of a connected channel has one state word in the channel's page,
 * which only the two ends map: PENDING is set by the peer's notify, MASKED by
 * the owner when it reports the port, as in Xen's shared_info bitmaps.  The
 * owner finds fired ports by scanning the words of its own ports; a notify
 * that makes a port pending while unmasked also writes one byte to the
 * owner's wake pipe for that channel (one pipe per channel end: the peer is
 * its only writer).
 *
 * Every handle also has an epoch table that only the simulator writes:
 * slot 0 counts changes to the handle's ports, slot P is port P's epoch,
 * bumped when its channel connects or closes.
 */
/* pvplug_evtchn_pending(): the epoch table changed, resync and call again. */
#define PVPLUG_EVTCHN_SYNC	(-1000000L)
/* Reads per wake fd and call (16 x 4 KiB: a full default pipe), so that a
 * flooding peer cannot keep one drain going. */
#define PVPLUG_EVTCHN_DRAIN_BATCH 16

struct pvplug_evtchn {
	int epfd;		/* fileno(): the wake pipes, push_fd, self_fd */
	int push_fd;		/* from the simulator: the epoch table changed */
	int self_fd;		/* eventfd: an unmask found a latched event */
	uint32_t gen;		/* table[0] at the last resync */
	const uint32_t *table;	/* epochs, written by the simulator */
	uint32_t count;		/* ports of this handle */
	uint32_t next;		/* where the next scan starts (round robin) */
	const uint32_t *ports;
	uint32_t **words;	/* each port's state word */
};

static uint32_t pvplug_evtchn_epoch(const uint32_t *table, uint32_t slot)
{
	return __atomic_load_n(&table[slot], __ATOMIC_ACQUIRE);
}

/* The simulator's side: publish a new epoch (or generation, slot 0). */
static void pvplug_evtchn_set_epoch(uint32_t *table, uint32_t slot,
				    uint32_t epoch)
{
	__atomic_store_n(&table[slot], epoch, __ATOMIC_RELEASE);
}

static uint32_t pvplug_evtchn_state(const uint32_t *word)
{
	return __atomic_load_n(word, __ATOMIC_ACQUIRE);
}

/* Carry state bits into a word (a port moving to a new channel). */
static void pvplug_evtchn_merge(uint32_t *word, uint32_t bits)
{
	__atomic_fetch_or(word, bits, __ATOMIC_ACQ_REL);
}

static void pvplug_evtchn_wake_self(int self_fd)
{
	uint64_t one = 1;
	ssize_t ret = write(self_fd, &one, sizeof(one));

	(void)ret;	/* EAGAIN: the counter is huge, the fd is readable */
}

/* xenevtchn_notify: pvplug_evtchn_notify, in pvplug_fast.h (the shim sends
 * WRITEs with it too). */

/*
 * xenevtchn_unmask: clear MASKED; a notify latched meanwhile makes the port
 * reportable again, so make fileno() readable.
 */
static void pvplug_evtchn_unmask(uint32_t *word, int self_fd)
{
	uint32_t old = __atomic_fetch_and(word, ~PVPLUG_EVTCHN_MASKED,
					  __ATOMIC_ACQ_REL);
	uint32_t both = PVPLUG_EVTCHN_PENDING | PVPLUG_EVTCHN_MASKED;

	if ((old & both) == both)
		pvplug_evtchn_wake_self(self_fd);
}

/* Report a word that is pending and unmasked: mask it, then consume the
 * pending bit.  Wait-free: whatever the peer writes, no loop. */
static int pvplug_evtchn_claim(uint32_t *word)
{
	uint32_t old = __atomic_load_n(word, __ATOMIC_ACQUIRE);

	if ((old & (PVPLUG_EVTCHN_PENDING | PVPLUG_EVTCHN_MASKED)) !=
	    PVPLUG_EVTCHN_PENDING)
		return 0;
	old = __atomic_fetch_or(word, PVPLUG_EVTCHN_MASKED, __ATOMIC_ACQ_REL);
	if (old & PVPLUG_EVTCHN_MASKED)
		return 0;	/* another thread reported it */
	__atomic_fetch_and(word, ~PVPLUG_EVTCHN_PENDING, __ATOMIC_ACQ_REL);
	return 1;
}

static uint32_t pvplug_evtchn_scan(struct pvplug_evtchn *h)
{
	uint32_t i, k, n = h->count;

	for (i = 0; i < n; i++) {
		k = (h->next + i) % n;
		if (pvplug_evtchn_claim(h->words[k])) {
			h->next = (k + 1) % n;
			return h->ports[k];
		}
	}
	return 0;
}

/* Read what made fd readable.  Returns 0, or -errno (ECONNRESET: the
 * simulator closed the push socket). */
static int pvplug_evtchn_drain_fd(struct pvplug_evtchn *h, int fd)
{
	char buf[4096];
	ssize_t got = 0;
	int i;

	if (fd == h->self_fd) {
		got = read(fd, buf, 8);
		(void)got;	/* EAGAIN: another thread read it first */
		return 0;
	}
	if (fd != h->push_fd) {
		/* A wake pipe: never EOF (we hold a write end), never blocks. */
		for (i = 0; i < PVPLUG_EVTCHN_DRAIN_BATCH; i++)
			if (read(fd, buf, sizeof(buf)) < (ssize_t)sizeof(buf))
				break;
		return 0;
	}
	for (i = 0; i < PVPLUG_EVTCHN_DRAIN_BATCH; i++) {
		got = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (got == 0)
			return -ECONNRESET;
		if (got < 0)
			break;
	}
	if (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
		return -errno;
	return 0;
}

static int pvplug_evtchn_drain(struct pvplug_evtchn *h)
{
	struct epoll_event ev[16];
	int n, i, err, rounds;

	for (rounds = 0; rounds < 8; rounds++) {
		n = epoll_wait(h->epfd, ev, 16, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		for (i = 0; i < n; i++) {
			err = pvplug_evtchn_drain_fd(h, ev[i].data.fd);
			if (err)
				return err;
		}
		if (n < 16)
			break;
	}
	return 0;
}

/*
 * xenevtchn_pending: the next fired port of this handle (now masked), 0 if
 * none, PVPLUG_EVTCHN_SYNC when the epoch table changed (the caller resyncs
 * its ports and calls again), or -errno.  Wake-ups are drained only when
 * nothing is left to report, so fileno() stays readable while something is;
 * a port found right after a drain re-arms it.
 */
static long pvplug_evtchn_pending(struct pvplug_evtchn *h)
{
	uint32_t port;
	int err;

	if (pvplug_evtchn_epoch(h->table, 0) != h->gen)
		return PVPLUG_EVTCHN_SYNC;
	port = pvplug_evtchn_scan(h);
	if (port)
		return port;
	err = pvplug_evtchn_drain(h);
	if (err)
		return err;
	if (pvplug_evtchn_epoch(h->table, 0) != h->gen)
		return PVPLUG_EVTCHN_SYNC;
	port = pvplug_evtchn_scan(h);
	if (port)
		pvplug_evtchn_wake_self(h->self_fd);
	return port;
}

/*
 * The plugin's poll descriptor: a CLOCK_MONOTONIC timerfd that Python arms
 * for the moment the stream will be ready (the emulated period interrupt).
 * Arming resets the expiry count, so a re-armed timer is not readable.
 */
static int pvplug_timer_create(void)
{
	return timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
}

/* Fire at absolute monotonic time `when` (seconds); <= 0 disarms.  A time in
 * the past fires at once: the fd stays readable until re-armed. */
/* pvplug_timer_arm: in pvplug_fast.h (the shim re-arms too). */

static int pvplug_close_fd(int fd)
{
	return close(fd);
}

#endif /* PVPLUG_NATIVE_H */
