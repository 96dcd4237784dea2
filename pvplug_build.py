"""cffi builder for ``alsa_pvplug._native``: ring index atomics, page mapping
for the simulated grant table, the simulated event channels' bit operations,
and the libxen* calls of the ``xen`` transport.

API mode, compiled against the installed headers (Debian ``libxen-dev``) so
that a changed prototype is a build error, not a crash.  Run directly
(``python pvplug_build.py``) to build in place; setuptools runs it through
``cffi_modules`` on install.
"""

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent

# The C declarations Python may call.  Kept in one string so that the plugin
# build (csrc/) can reuse it.
def _fast_struct() -> str:
    """struct pvplug_fast as csrc/pvplug_fast.h defines it (one definition)."""
    text = (HERE / "csrc" / "pvplug_fast.h").read_text()
    return text[text.index("/* cdef-begin */") + 16:text.index("/* cdef-end */")]


NATIVE_CDEF = _fast_struct() + """
double pvplug_now(void);
void pvplug_fast_begin(struct pvplug_fast *f);
void pvplug_fast_end(struct pvplug_fast *f);
long pvplug_fast_pointer(struct pvplug_fast *f, unsigned long appl_mod, double now);
int pvplug_fast_delay(struct pvplug_fast *f, unsigned long appl_mod, double now, long *delay);
int pvplug_fast_ready(struct pvplug_fast *f, unsigned long appl_mod, double now);
long pvplug_fast_transfer(struct pvplug_fast *f, unsigned long appl_mod, const char *src,
                          unsigned long frames, double now);
void pvplug_fast_claim(struct pvplug_fast *f);
void pvplug_fast_unclaim(struct pvplug_fast *f);

uint32_t pvplug_load_u32(const void *base, size_t off);
void pvplug_store_u32(void *base, size_t off, uint32_t val);
void pvplug_mb(void);
void pvplug_rmb(void);
void pvplug_wmb(void);
void *pvplug_reserve_pages(size_t pages);
int pvplug_map_page_at(void *base, size_t index, int fd, int64_t offset,
                       int writable);
int pvplug_unmap_pages(void *base, size_t pages);
void *pvplug_map_fd(int fd, size_t pages, int writable);

/* simulated event channels */
#define PVPLUG_EVTCHN_PENDING ...
#define PVPLUG_EVTCHN_MASKED ...
#define PVPLUG_EVTCHN_SYNC ...
struct pvplug_evtchn {
    int epfd;
    int push_fd;
    int self_fd;
    uint32_t gen;
    const uint32_t *table;
    uint32_t count;
    uint32_t next;
    const uint32_t *ports;
    uint32_t **words;
};
uint32_t pvplug_evtchn_epoch(const uint32_t *table, uint32_t slot);
void pvplug_evtchn_set_epoch(uint32_t *table, uint32_t slot, uint32_t epoch);
uint32_t pvplug_evtchn_state(const uint32_t *word);
void pvplug_evtchn_merge(uint32_t *word, uint32_t bits);
void pvplug_evtchn_wake_self(int self_fd);
int pvplug_evtchn_notify(const uint32_t *epoch, uint32_t expect, uint32_t *peer,
                         int peer_fd);
void pvplug_evtchn_unmask(uint32_t *word, int self_fd);
long pvplug_evtchn_pending(struct pvplug_evtchn *h);
int pvplug_timer_create(void);
int pvplug_timer_arm(int fd, double when);
int pvplug_close_fd(int fd);

/* libxenevtchn (xenevtchn.h) */
typedef struct xenevtchn_handle xenevtchn_handle;
typedef int xenevtchn_port_or_error_t;
typedef uint32_t evtchn_port_t;
xenevtchn_handle *xenevtchn_open(void *logger, unsigned int open_flags);
int xenevtchn_close(xenevtchn_handle *xce);
int xenevtchn_fd(xenevtchn_handle *xce);
int xenevtchn_notify(xenevtchn_handle *xce, evtchn_port_t port);
xenevtchn_port_or_error_t xenevtchn_bind_unbound_port(xenevtchn_handle *xce,
                                                      uint32_t domid);
xenevtchn_port_or_error_t xenevtchn_bind_interdomain(xenevtchn_handle *xce,
                                                     uint32_t domid,
                                                     evtchn_port_t remote_port);
int xenevtchn_unbind(xenevtchn_handle *xce, evtchn_port_t port);
xenevtchn_port_or_error_t xenevtchn_pending(xenevtchn_handle *xce);
int xenevtchn_unmask(xenevtchn_handle *xce, evtchn_port_t port);

/* libxengnttab (xengnttab.h): gntshr = share (frontend), gnttab = map */
typedef struct xengntdev_handle xengnttab_handle;
typedef struct xengntdev_handle xengntshr_handle;
xengnttab_handle *xengnttab_open(void *logger, unsigned int open_flags);
int xengnttab_close(xengnttab_handle *xgt);
void *xengnttab_map_domain_grant_refs(xengnttab_handle *xgt, uint32_t count,
                                      uint32_t domid, uint32_t *refs,
                                      int prot);
int xengnttab_unmap(xengnttab_handle *xgt, void *start_address,
                    uint32_t count);
xengntshr_handle *xengntshr_open(void *logger, unsigned int open_flags);
int xengntshr_close(xengntshr_handle *xgs);
void *xengntshr_share_pages(xengntshr_handle *xgs, uint32_t domid, int count,
                            uint32_t *refs, int writable);
int xengntshr_unshare(xengntshr_handle *xgs, void *start_address,
                      uint32_t count);

/* libxenstore (xenstore.h) */
struct xs_handle;
typedef uint32_t xs_transaction_t;
struct xs_permissions { unsigned int id; unsigned int perms; };
#define XS_PERM_NONE ...
#define XS_PERM_READ ...
#define XS_PERM_WRITE ...
#define XS_OPEN_SOCKETONLY ...
struct xs_handle *xs_open(unsigned long flags);
void xs_close(struct xs_handle *xsh);
char **xs_directory(struct xs_handle *h, xs_transaction_t t, const char *path,
                    unsigned int *num);
void *xs_read(struct xs_handle *h, xs_transaction_t t, const char *path,
              unsigned int *len);
bool xs_write(struct xs_handle *h, xs_transaction_t t, const char *path,
              const void *data, unsigned int len);
bool xs_mkdir(struct xs_handle *h, xs_transaction_t t, const char *path);
bool xs_rm(struct xs_handle *h, xs_transaction_t t, const char *path);
struct xs_permissions *xs_get_permissions(struct xs_handle *h,
                                          xs_transaction_t t,
                                          const char *path, unsigned int *num);
bool xs_set_permissions(struct xs_handle *h, xs_transaction_t t,
                        const char *path, struct xs_permissions *perms,
                        unsigned int num_perms);
bool xs_watch(struct xs_handle *h, const char *path, const char *token);
bool xs_unwatch(struct xs_handle *h, const char *path, const char *token);
int xs_fileno(struct xs_handle *h);
char **xs_check_watch(struct xs_handle *h);
xs_transaction_t xs_transaction_start(struct xs_handle *h);
bool xs_transaction_end(struct xs_handle *h, xs_transaction_t t, bool abort);
char *xs_get_domain_path(struct xs_handle *h, unsigned int domid);

void free(void *ptr);
"""

NATIVE_SOURCE = """
#include <stdbool.h>
#include <stdlib.h>
#include <xenevtchn.h>
#include <xengnttab.h>
#include <xenstore.h>
#include "pvplug_native.h"
"""

ffibuilder = FFI()
ffibuilder.cdef(NATIVE_CDEF)
ffibuilder.set_source(
    "alsa_pvplug._native",
    NATIVE_SOURCE,
    include_dirs=[str(HERE / "csrc")],
    libraries=["xenevtchn", "xengnttab", "xenstore"],
    extra_compile_args=["-Wall", "-Wno-unused-function"],
)

if __name__ == "__main__":
    import os

    os.chdir(HERE)
    ffibuilder.compile(verbose=False)
