"""Sound devices through PortAudio (sounddevice): list them, pick one by id or name.

A device is given as its index from ``--list-devices`` or as a part of its name
(``pulse``, ``USB``); anything that does not name exactly one device with the
needed channels is a :class:`VoxloopError` that says what exists.
"""

from __future__ import annotations

from voxloop.errors import VoxloopError
from voxloop.realtime.wire.protocol import WIRE_RATE_HZ

HINT = "run `voxloop client --list-devices` to see them"


def sounddevice():
    """The ``sounddevice`` module; a clear error when PortAudio is missing."""
    try:
        import sounddevice as sd
    except OSError as exc:  # raised on import when libportaudio cannot be loaded
        raise VoxloopError(f"PortAudio is not available ({exc}): install it "
                           "(Debian: apt-get install libportaudio2)") from exc
    return sd


def list_devices() -> str:
    """A table of the devices, the defaults marked ``>`` (input) and ``<`` (output)."""
    sd = sounddevice()
    devices = sd.query_devices()
    default_in, default_out = _defaults(sd)
    lines = ["  id  in out  rate   name (host API)"]
    for d in devices:
        mark = (">" if d["index"] == default_in else " ") + ("<" if d["index"] == default_out
                                                              else " ")
        api = sd.query_hostapis(d["hostapi"])["name"]
        lines.append(f"{mark}{d['index']:>3} {d['max_input_channels']:>3} "
                     f"{d['max_output_channels']:>3} {d['default_samplerate']:>6.0f}   "
                     f"{d['name']} ({api})")
    if not devices:
        lines.append("  (no devices: is a sound server such as PulseAudio running?)")
    lines.append("> default input, < default output; pass --input-device / --output-device "
                 "an id or a part of a name")
    lines.append("through PulseAudio or PipeWire ('pulse', 'default') the microphone and speaker "
                 "are the sound server's defaults: change them with pavucontrol, or "
                 "PULSE_SOURCE=... PULSE_SINK=... voxloop client")
    return "\n".join(lines)


def resolve_device(spec: str | None, kind: str) -> int:
    """The index of the ``kind`` ("input" or "output") device that ``spec`` names
    (``None``: the default one), checked to take 24 kHz mono float32."""
    sd = sounddevice()
    devices = sd.query_devices()
    channels = f"max_{kind}_channels"
    if not devices:
        raise VoxloopError(f"no sound devices found, so no {kind} device; is a sound server "
                           "(PulseAudio, PipeWire) running for this user?")
    if spec is None or spec == "":
        index = _defaults(sd)[0 if kind == "input" else 1]
        if index < 0:
            raise VoxloopError(f"there is no default {kind} device; {HINT}")
    elif spec.strip().isdigit():
        index = int(spec)
        if index >= len(devices):
            raise VoxloopError(f"no {kind} device {index}: ids go from 0 to "
                               f"{len(devices) - 1}; {HINT}")
    else:
        matches = [d["index"] for d in devices
                   if spec.lower() in d["name"].lower() and d[channels] > 0]
        if not matches:
            raise VoxloopError(f"no {kind} device matches {spec!r}; {HINT}")
        if len(matches) > 1:
            names = ", ".join(f"{i} ({devices[i]['name']})" for i in matches)
            raise VoxloopError(f"{spec!r} matches several {kind} devices: {names}; "
                               "pass an id")
        index = matches[0]
    device = devices[index]
    if device[channels] < 1:
        raise VoxloopError(f"device {index} ({device['name']}) has no {kind} channels; {HINT}")
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    try:
        check(device=index, channels=1, dtype="float32", samplerate=WIRE_RATE_HZ)
    except Exception as exc:  # sounddevice raises PortAudioError or ValueError
        raise VoxloopError(f"{kind} device {index} ({device['name']}) cannot do "
                           f"{WIRE_RATE_HZ} Hz mono: {exc}; the 'pulse' or 'default' "
                           "device resamples for you") from exc
    return index


def device_name(index: int) -> str:
    return sounddevice().query_devices(index)["name"]


def _defaults(sd) -> tuple[int, int]:
    default_in, default_out = sd.default.device
    return int(default_in), int(default_out)
