"""Fuzzing both peers of alsa-pvplug (issue 9: nothing a peer sends may kill,
hang or disable).  See ``tests/fuzz/README.md`` for the layout and commands."""
