"""alsa-pvplug: a Xen para-virtual sound (sndif v2) frontend in guest userspace."""

__version__ = "0.1.0"
