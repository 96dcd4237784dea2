/* SPDX-License-Identifier: MIT
 *
 * Shared-memory index access for the sndif rings, and the page mapping the
 * simulated grant table needs.  Python fills and copies whole 64-byte slots;
 * every load/store of a ring index and every barrier happens here, because
 * Python cannot order memory accesses (sndif-protocol.md section 5).
 */
#ifndef PVPLUG_NATIVE_H
#define PVPLUG_NATIVE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

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

static int pvplug_close_fd(int fd)
{
	return close(fd);
}

#endif /* PVPLUG_NATIVE_H */
