/* SPDX-License-Identifier: MIT
 *
 * What Python's open hands the C shim: the hardware constraints to set with
 * snd_pcm_ioplug_set_param_*() and the poll descriptors.  Read by both the
 * compiler and cffi's cdef (alsa_pvplug/glue/build.py), so: plain C, no
 * preprocessor lines, and included once (by pcm_pvplug.c).
 */
struct pvplug_hw {
	unsigned int formats[64];
	int n_formats;
	unsigned int rates[64];
	int n_rates;
	unsigned int channels_min, channels_max;
	unsigned int period_bytes_min, period_bytes_max;
	unsigned int buffer_bytes_min, buffer_bytes_max;
	unsigned int periods_min, periods_max;
	int fds[2];
	int n_fds;
	void *fast;	/* struct pvplug_fast (pvplug_fast.h), owned by Python */
};
