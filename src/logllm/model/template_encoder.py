"""The encoder of input mode ``template-id``: one learned vector per Drain template id.

It stands where the BERT encoder stands (Table IV of the paper, "template id"): the projector reads
one vector per distinct message, here the row of the message's template in an embedding table.
Row 0 is the "unseen" template that every message matching no training template shares; it gets no
gradient from training sequences (their messages all have templates), so it keeps its initial value.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from logllm.errors import ConfigError

WEIGHTS_FILE = "template_encoder.safetensors"
CONFIG_FILE = "template_encoder.json"


class TemplateEncoder(torch.nn.Module):
    """An embedding table over template ids 0..n_templates (0 = unseen), ``width`` wide."""

    def __init__(self, n_templates: int, width: int) -> None:
        super().__init__()
        if n_templates < 1 or width < 1:
            raise ConfigError(f"template encoder needs at least one template and a positive width, got "
                              f"{n_templates} templates, width {width}")
        self.n_templates = n_templates
        self.width = width
        self.table = torch.nn.Embedding(n_templates + 1, width)

    def forward(self, template_ids: torch.Tensor) -> torch.Tensor:
        return self.table(template_ids)  # (n,) -> (n, width)

    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(folder / WEIGHTS_FILE))
        (folder / CONFIG_FILE).write_text(json.dumps({"n_templates": self.n_templates, "width": self.width}) + "\n")

    @classmethod
    def load(cls, folder: str | Path, device: torch.device) -> TemplateEncoder:
        from safetensors.torch import load_file

        folder = Path(folder)
        try:
            shape = json.loads((folder / CONFIG_FILE).read_text())
            state = load_file(str(folder / WEIGHTS_FILE))
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{folder}: cannot read the template encoder ({err}); the model folder is "
                              "incomplete or damaged") from err
        encoder = cls(int(shape["n_templates"]), int(shape["width"]))
        encoder.load_state_dict(state)  # strict: a missing or extra tensor fails loudly
        return encoder.to(device)


__all__ = ["TemplateEncoder"]
