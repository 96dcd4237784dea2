"""The ALSA glue: the only layer that knows ALSA.

``pcm`` holds the callbacks as plain methods, ``embed`` binds them to the C
shim, ``harness`` drives them the way ioplug does (for tests, without ALSA),
``build`` compiles the plugin and ``install`` puts it where alsa-lib looks.
"""
