"""What the tests share: the simulator, backend and ALSA environment
(``env``), test audio, WAV files and correlation (``audio``), a private
PipeWire daemon (``pipewire``, also used by bench/pipewire.py) and a
scripted hostile backend (``hostile_backend``).  Processes and waits come
from ``alsa_pvplug.sim.procs``, which the demo and bench/ use as well (the
demo ships in the package, so that layer lives there)."""
