"""Load an SB3 agent zip without unpickling anything from it.

SB3's ``BaseAlgorithm.load`` cloudpickle-loads every ``{":serialized:": ...}`` entry of the
zip's ``data`` JSON (policy class, spaces, schedules, ``policy_kwargs`` with classes ...):
a crafted zip runs arbitrary code on load. Its ``*.pth`` files are read with
``torch.load(weights_only=True)`` (no code). :func:`load_agent_safely` therefore reads the
``data`` JSON itself and passes ``custom_objects`` replacing *every* serialized entry with an
object rebuilt from plain JSON fields and an allow-list (the env's spaces, kubetrade's
activation and feature-extractor classes, constant schedules); an entry it does not know is
refused before SB3 sees the file. SB3 never reaches ``cloudpickle.loads``.
"""

from __future__ import annotations

import ast
import json
import zipfile
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubetrade.errors import RegistryError

__all__ = ["load_agent_safely", "safe_custom_objects", "load_ensemble_safely"]

_SER = ":serialized:"


def _fail(path: Path, what: str) -> RegistryError:
    return RegistryError(f"{path.name}: {what}; refusing to load this agent zip")


def _literal(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def _space(entry: dict[str, Any], path: Path, key: str) -> Any:
    import numpy as np
    from gymnasium import spaces

    from kubetrade.rl.env import _CLIP

    kind = str(entry.get(":type:", ""))
    shape = tuple(int(s) for s in _literal(entry.get("_shape", "[]")) or ())
    if kind == "<class 'gymnasium.spaces.discrete.Discrete'>":
        n = int(_literal(entry.get("n")))
        if n < 1 or int(_literal(entry.get("start", 0)) or 0) != 0:
            raise _fail(path, f"{key} is not a Discrete(n) space the env makes")
        return spaces.Discrete(n)
    if kind == "<class 'gymnasium.spaces.box.Box'>" and shape:
        bound = _CLIP if key == "observation_space" else 1.0
        return spaces.Box(-bound, bound, shape, dtype=np.float32)
    raise _fail(path, f"{key} of type {kind[:80]!r} is not a space kubetrade's env makes")


def _policy_kwargs(entry: dict[str, Any], path: Path) -> dict[str, Any]:
    from kubetrade.rl.agents import _ACTIVATIONS, CNNLSTMFeatureExtractor

    classes = {str(cls): cls for cls in _ACTIVATIONS.values()}
    classes[str(CNNLSTMFeatureExtractor)] = CNNLSTMFeatureExtractor
    out: dict[str, Any] = {}
    for name, value in entry.items():
        if name.startswith(":"):
            continue
        if name in ("activation_fn", "features_extractor_class"):
            if value not in classes:
                raise _fail(path, f"policy_kwargs.{name}={str(value)[:80]!r} is not allowed")
            out[name] = classes[value]
        elif name in ("net_arch", "features_extractor_kwargs", "n_quantiles"):
            parsed = _literal(value)
            if isinstance(parsed, str):
                raise _fail(path, f"policy_kwargs.{name} is not a plain value")
            out[name] = parsed
        elif isinstance(value, bool | int | float | list | dict) or value is None:
            out[name] = value  # JSON-serializable: SB3 wrote the value itself
        else:
            raise _fail(path, f"policy_kwargs.{name} is not a value kubetrade writes")
    return out


def _schedule(entry: dict[str, Any], data: dict[str, Any], key: str) -> Callable[[float], float]:
    from stable_baselines3.common.utils import ConstantSchedule, FloatSchedule, LinearSchedule

    if "start" in entry and "end" in entry:
        start, end = float(_literal(entry["start"])), float(_literal(entry["end"]))
        fraction = float(_literal(entry.get("end_fraction", 1.0)))
        return LinearSchedule(start, end, fraction)
    text = str(entry.get("value_schedule", ""))
    if text.startswith("ConstantSchedule(val=") and text.endswith(")"):
        return FloatSchedule(ConstantSchedule(float(text[len("ConstantSchedule(val=") : -1])))
    rate = data.get("learning_rate")
    if key == "lr_schedule" and isinstance(rate, int | float):
        return FloatSchedule(ConstantSchedule(float(rate)))
    return FloatSchedule(ConstantSchedule(0.0))


def safe_custom_objects(path: str | Path, algorithm: Any) -> dict[str, Any]:
    """``custom_objects`` replacing every serialized entry of the zip's ``data`` JSON
    (``algorithm``: the SB3 class whose ``MlpPolicy`` the agent uses)."""
    from stable_baselines3.common.buffers import ReplayBuffer, RolloutBuffer
    from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
    except (OSError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise _fail(path, f"not a readable SB3 agent zip ({type(exc).__name__})") from exc
    if not isinstance(data, dict):
        raise _fail(path, "its data entry is not a JSON object")
    custom: dict[str, Any] = {}
    for key, entry in data.items():
        if not (isinstance(entry, dict) and _SER in entry):
            continue
        if key in ("observation_space", "action_space"):
            custom[key] = _space(entry, path, key)
        elif key == "policy_class":
            custom[key] = algorithm.policy_aliases["MlpPolicy"]
        elif key == "policy_kwargs":
            custom[key] = _policy_kwargs(entry, path)
        elif key in ("lr_schedule", "clip_range", "clip_range_vf", "exploration_schedule"):
            custom[key] = _schedule(entry, data, key)
        elif key in ("_last_obs", "_last_episode_starts", "_last_original_obs", "action_noise"):
            custom[key] = None
        elif key in ("ep_info_buffer", "ep_success_buffer"):
            custom[key] = deque(maxlen=100)
        elif key == "rollout_buffer_class":
            custom[key] = RolloutBuffer
        elif key == "replay_buffer_class":
            custom[key] = ReplayBuffer
        elif key == "train_freq":
            custom[key] = TrainFreq(1, TrainFrequencyUnit.STEP)
        else:
            raise _fail(path, f"it holds a pickled entry {key[:60]!r} kubetrade does not write")
    return custom


def load_agent_safely(agent_type: str, path: str | Path, device: str = "cpu") -> Any:
    """The SB3 agent in ``path`` with every pickled entry replaced (see module doc)."""
    from kubetrade.rl.agents import AGENT_CLASSES, check_agent_type

    cls = AGENT_CLASSES[check_agent_type(agent_type)]
    custom = safe_custom_objects(path, cls)
    try:
        return cls.load(path, device=device, custom_objects=custom)
    except (ValueError, KeyError, RuntimeError, TypeError, AssertionError) as exc:
        raise _fail(Path(path), f"SB3 could not load it ({type(exc).__name__})") from exc


def load_ensemble_safely(directory: str | Path, device: str = "cpu") -> Any:
    """What :meth:`EnsembleAgent.load` returns, each member through :func:`load_agent_safely`."""
    from kubetrade.rl.ensemble import EnsembleAgent, Member

    root = Path(directory)
    try:
        meta = json.loads((root / "ensemble.json").read_text(encoding="utf-8"))
        entries = [(str(e["name"]), str(e["agent_type"]), str(e["action_type"]), str(e["file"]))
                   for e in meta["members"]]  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"{root}/ensemble.json is missing or malformed ({exc!r:.120})") from exc
    members = []
    for name, agent_type, action_type, file in entries:
        if Path(file).name != file:
            raise RegistryError(f"ensemble.json names {file[:80]!r}, not a file of {root}")
        model = load_agent_safely(agent_type, root / file, device=device)
        members.append(Member(name=name, agent_type=agent_type, action_type=action_type,
                              model=model))  # fmt: skip
    return EnsembleAgent.from_meta(meta, members)
