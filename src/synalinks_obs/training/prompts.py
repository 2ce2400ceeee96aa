"""The prompts training learns, in MLflow's Prompt Registry: one prompt per trainable module.

For each trainable module that renders a prompt (a ``Generator`` and its kin), the prompt
``<program>.<module>`` holds the system prompt its learned state renders (instructions and
few-shot examples, see ``compat.synalinks.system_prompt``) followed by a ``{{ inputs }}``
user turn, with the module's output schema as ``response_format``. A new version is
registered when training begins and after every epoch whose prompt changed (the prompt
the epoch's validation scored, as for the epoch states)
(never twice the same text in a row, across runs too: the registry's latest version is
compared first), tagged ``synalinks.run_id`` and ``synalinks.epoch`` (``initial`` before
training) and the epoch's ``val_reward``, and listed under the run's experiment; the run's
tag ``synalinks.prompts`` names the versions it uses (MLflow's own run link too, when the
run is in MLflow's global tracking store, the only one its link goes to). A team
reviews, compares and pins versions like any other prompt
(``mlflow.genai.load_prompt("prompts:/qa.generator/3")``).
"""

from __future__ import annotations

import re

from synalinks_obs import uris
from synalinks_obs.compat import mlflow as mlflow_compat
from synalinks_obs.compat import synalinks as synalinks_compat
from synalinks_obs.training.program import modules_of, program_name

USER_TURN = {"role": "user", "content": "{{ inputs }}"}
PROMPTS_TAG = "synalinks.prompts"  # the run's prompt versions: "name/version,..."


def prompt_name(program, module) -> str:
    """``<program>.<module>``, with what MLflow refuses in a prompt name replaced by ``_``."""
    raw = f"{program_name(program)}.{getattr(module, 'name', '') or type(module).__name__}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", raw)


def trainable_prompts(program) -> dict:
    """``{prompt name: (system prompt, response schema or None)}`` of the program's
    trainable modules that render one."""
    found = {}
    for module in modules_of(program):
        if not getattr(module, "trainable", False) or not getattr(module, "trainable_variables", None):
            continue
        text = synalinks_compat.system_prompt(module)
        if text is None:
            continue
        schema = getattr(module, "schema", None)
        found[prompt_name(program, module)] = (text, schema if isinstance(schema, dict) else None)
    return found


def _latest(client, name):
    """``(text of the system turn, version)`` of the registry's latest version, or Nones."""
    try:
        version = client.load_prompt(f"prompts:/{name}@latest")
    except Exception:  # no such prompt yet
        return None, None
    template = getattr(version, "template", None)
    if isinstance(template, list) and template and isinstance(template[0], dict):
        return template[0].get("content"), version
    return None, None


class PromptRegistrar:
    """Registers a run's learned prompts (see the module docstring)."""

    def __init__(self, client, program, run_id: str, experiment_id: str, tracking_uri: str, mask=None, set_tag=None):
        self.client = client
        # sets a tag of the run (the Monitor's guarded store call: a failing store is one
        # warning for the whole run), else the client's own set_tag
        self.set_tag = set_tag or (lambda key, value: client.set_tag(run_id, key, value))
        self.mask = mask  # masks a prompt's text before it is stored (training.privacy)
        self.program = program
        self.run_id = run_id
        self.experiment_id = experiment_id
        # MLflow links a prompt version to a run through the *global* tracking store.
        self._link_to_run = _is_global_store(tracking_uri)
        self._texts: dict = {}  # prompt name -> the text of its latest version
        self._validated = None  # the prompts the epoch's validation scored
        self.versions: dict = {}  # prompt name -> the PromptVersion registered last
        self._listed = ""  # the run's synalinks.prompts tag, as set last

    def validation_begins(self) -> None:
        """Keep the prompts the epoch's validation scores (the optimizer may swap
        candidates right after it): they are what ``register`` files with its reward."""
        if self._validated is None:
            self._validated = trainable_prompts(self.program)

    def register(self, epoch, scores: dict | None = None) -> list:
        """Register the prompts that changed (those validation scored, else the current
        ones); the new ``PromptVersion``s. ``epoch`` is an epoch number or ``"initial"``."""
        registered = []
        prompts, self._validated = self._validated, None
        if prompts is None:
            prompts = trainable_prompts(self.program)
        for name, (text, schema) in prompts.items():
            if self.mask is not None:
                text = self.mask(text)
            if name not in self._texts:
                self._texts[name], latest = _latest(self.client, name)
                if latest is not None and self._texts[name] == text:
                    # Learned by an earlier run: this run starts from (and links) it.
                    self.versions[name] = latest
                    self._link(latest)
            if self._texts[name] == text:
                continue
            tags = {"synalinks.run_id": self.run_id, "synalinks.epoch": str(epoch)}
            for key, value in (scores or {}).items():
                tags[f"synalinks.{key}"] = f"{value:.6g}"
            when = "before training" if epoch == "initial" else f"after epoch {epoch}"
            version = self.client.register_prompt(
                name=name,
                template=[{"role": "system", "content": text}, dict(USER_TURN)],
                commit_message=f"Learned by run {self.run_id}, {when}",
                tags=tags,
                response_format=schema,
            )
            self._texts[name] = text
            self.versions[name] = version
            self._link(version)
            mlflow_compat.link_prompt_to_experiment(self.client, version, self.experiment_id)
            registered.append(version)
        listed = ",".join(f"{v.name}/{v.version}" for v in self.versions.values())
        if listed and listed != self._listed:
            self.set_tag(PROMPTS_TAG, listed[:5000])
            self._listed = listed
        return registered

    def _link(self, version) -> None:
        if self._link_to_run:
            self.client.link_prompt_version_to_run(self.run_id, version)


def _is_global_store(tracking_uri) -> bool:
    import mlflow

    return uris.same_store(mlflow.get_tracking_uri(), tracking_uri)
