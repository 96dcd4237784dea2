/* SPDX-License-Identifier: MIT
 *
 * The C<->Python contract: the callbacks the shim (pcm_pvplug.c) calls and
 * alsa_pvplug/glue/embed.py implements.  Read by the compiler (PVPLUG_PY =
 * static, as cffi wants) and by cffi's cdef (PVPLUG_PY = extern "Python",
 * alsa_pvplug/glue/build.py): one definition.  Plain C below this comment.
 */
PVPLUG_PY int pvplug_py_open(const char *name, int stream, int mode, int nopts,
			  const char **keys, const char **values,
			  struct pvplug_hw *hw, char *err, size_t errlen);
PVPLUG_PY int pvplug_py_hw_params(int id, int access, int format,
			       unsigned int channels, unsigned int rate,
			       unsigned long period, unsigned long buffer);
PVPLUG_PY int pvplug_py_sw_params(int id, unsigned long avail_min,
			       unsigned long start_threshold,
			       unsigned long stop_threshold,
			       unsigned long boundary);
PVPLUG_PY int pvplug_py_prepare(int id);
PVPLUG_PY int pvplug_py_start(int id, unsigned long appl);
PVPLUG_PY int pvplug_py_stop(int id);
PVPLUG_PY long pvplug_py_pointer(int id, unsigned long appl);
PVPLUG_PY long pvplug_py_transfer(int id, unsigned long appl, char *buf,
			       unsigned long frames);
PVPLUG_PY int pvplug_py_drain(int id, unsigned long appl, int nonblock);
PVPLUG_PY int pvplug_py_pause(int id, int enable);
PVPLUG_PY int pvplug_py_delay(int id, unsigned long appl, long *delay);
PVPLUG_PY int pvplug_py_poll_revents(int id, unsigned long appl, int fired);
PVPLUG_PY int pvplug_py_hw_free(int id);
PVPLUG_PY int pvplug_py_close(int id);
