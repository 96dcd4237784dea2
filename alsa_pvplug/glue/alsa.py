"""The ALSA numbers the glue needs (alsa/pcm.h, alsa/pcm_ioplug.h, poll.h).

Kept as plain ints so that the callbacks can be driven without alsa-lib
(``glue.harness``); ``tests/plugin/test_plugin_options.py`` checks them against pyalsaaudio and
the C headers.
"""

from __future__ import annotations

import select

from ..protocol.sndif import PcmFormat, silence  # noqa: F401 - silence: re-exported

STREAM_PLAYBACK = 0
STREAM_CAPTURE = 1
NONBLOCK = 0x1  # SND_PCM_NONBLOCK, in the open mode

ACCESS_MMAP_INTERLEAVED = 0
ACCESS_RW_INTERLEAVED = 3

POLLIN = select.POLLIN
POLLOUT = select.POLLOUT
POLLERR = select.POLLERR

# snd_pcm_format_t: sndif's XENSND_PCM_FORMAT_* were taken from ALSA's
# numbering (sndif.h), so the wire value is the ALSA value for every format
# both know.
ALSA_FORMATS: dict[PcmFormat, int] = {f: int(f) for f in PcmFormat}


def alsa_format(fmt: PcmFormat) -> int:
    return ALSA_FORMATS[fmt]


def sndif_format(alsa_value: int) -> PcmFormat:
    for fmt, value in ALSA_FORMATS.items():
        if value == alsa_value:
            return fmt
    raise ValueError(f"ALSA format {alsa_value} has no sndif equivalent")
