"""The model configs a user can name: JSON files in a config folder (``model_configs/`` by default)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlops.core.config import ModelConfig, load_model_config_file
from mlops.core.errors import ConfigError
from mlops.core.plugins import NamedConfig, resolve
from mlops.core.provenance import PROJECT_ROOT

DEFAULT_CONFIG_DIR = PROJECT_ROOT / "model_configs"


@dataclass
class ConfigEntry:
    name: str
    path: Path
    config: ModelConfig


class ModelCatalog:
    def __init__(self, config_dir: Path = DEFAULT_CONFIG_DIR, *, allow_external: bool = False) -> None:
        self.config_dir = Path(config_dir)
        self.allow_external = allow_external

    def names(self) -> list[str]:
        if not self.config_dir.is_dir():
            return []
        return sorted(p.stem for p in self.config_dir.glob("*.json"))

    def path_of(self, name_or_path: str, tuned_dir: Path | None = None) -> Path:
        """A config by path, by name in the config folder, or by name in ``tuned_dir`` (an experiment's tuned/)."""
        candidate = Path(name_or_path)
        if candidate.suffix == ".json" and candidate.is_file():
            return candidate
        if candidate.suffix == ".json" or "/" in name_or_path or "\\" in name_or_path:
            what = "is a folder, not a file" if candidate.is_dir() else "does not exist"
            raise ConfigError(f"--model-config-name {name_or_path}: the config file {candidate.resolve()} {what}. "
                              f"Check the path, or pass a config name (known: {', '.join(self.names()) or 'none'}).")
        path = self.config_dir / f"{name_or_path}.json"
        if not path.is_file() and tuned_dir is not None and (Path(tuned_dir) / f"{name_or_path}.json").is_file():
            path = Path(tuned_dir) / f"{name_or_path}.json"
        if "/" in name_or_path or "\\" in name_or_path or not path.is_file():
            tuned = sorted(p.stem for p in Path(tuned_dir).glob("*.json")) if tuned_dir and Path(tuned_dir).is_dir() else []
            raise ConfigError(
                f"unknown model config {name_or_path!r} in {self.config_dir} (known: {', '.join(self.names()) or 'none'}"
                f"{'; tuned in this experiment: ' + ', '.join(tuned) if tuned else ''}). "
                "Pass one of those names to --model-config-name, or a path to a .json config file."
            )
        return path

    def entry(self, name_or_path: str, tuned_dir: Path | None = None) -> ConfigEntry:
        path = self.path_of(name_or_path, tuned_dir)
        return ConfigEntry(name=path.stem, path=path, config=load_model_config_file(path))

    def resolve(self, name_or_path: str, tuned_dir: Path | None = None) -> NamedConfig:
        """Load a config, import its model class and validate its arguments, once."""
        entry = self.entry(name_or_path, tuned_dir)
        return resolve(entry.config, name=entry.name, source=str(entry.path), allow_external=self.allow_external)
