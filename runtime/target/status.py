"""A deploy root's status as text: what ``edgetool target status`` prints on the device and
``edgetool status`` prints per host on the workstation (from the JSON the device replies)."""

from __future__ import annotations

from typing import Dict

from .. import commands


def _signed_by(key) -> str:
    """How the current version was signed, as status prints it after the version."""
    return "" if key is None else " (unsigned)" if key == "unsigned" else " (signed by key {})".format(key)


def _serving_line(s) -> str:
    if not s:
        return "serving   nothing (no edgetool serve runs on this root)"
    return "serving   {} (edgetool serve, pid {}, since {})".format(s.get("version"), s.get("pid"), s.get("since"))


def model_summary(model) -> str:
    """Which base a device runs and how many updates on top of it, in a few words ("" when unknown)."""
    if not isinstance(model, dict) or not isinstance(model.get("base"), dict):
        return ""
    n = len(model.get("updates") or [])
    sha = str(model["base"].get("sha256") or "?")[:12]
    return "base {}{}".format(sha, " + {} update{}".format(n, "s" if n > 1 else "") if n else "")


def _model_line(model) -> str:
    """The base the current version runs (the full bundle it came with) and the updates applied on it."""
    words = model_summary(model)
    if not words:
        return "model     unknown"
    base = model["base"]
    text = "model     {} (full bundle {}, release {})".format(words, base.get("version"), base.get("release"))
    ups = model.get("updates") or []
    if ups:
        text += ": " + ", ".join("{} (release {})".format(u.get("version"), u.get("release")) for u in ups)
    return text


def format_status(st: Dict) -> str:
    lines = [
        "root      {}".format(st["root"]),
        "current   {}{}".format(st.get("current") or "none", _signed_by(st.get("current_signed_by"))),
        "previous  {}".format(st.get("previous") or "none"),
        _serving_line(st.get("serving")),
    ]
    if st.get("current"):
        lines.append(_model_line(st.get("model")))
    for v in st.get("versions", []):
        mark = "*" if v == st.get("current") else " "
        lines.append("version {} {}".format(mark, v))
    for name, c in sorted(st.get("checks", {}).items()):
        lines.append(
            "{:<9} {} on {} at {}: {}".format(name, "PASS" if c["ok"] else "FAIL", c["version"], c["at"], c["detail"])
        )
    if st.get("staging"):
        lines.append("staging   {} (incomplete uploads; a re-run resumes them)".format(", ".join(st["staging"])))
    lines.append(
        "signing   {}; trusted keys: {}".format(
            "unsigned bundles accepted" if st.get("accept_unsigned") else "trusted signature required",
            ", ".join(st.get("trusted_keys", [])) or "none",
        )
    )
    if st.get("trust_error"):
        lines.append("trust     {} (signed bundles are refused until it is fixed)".format(st["trust_error"]))
    if st.get("counter_error"):
        lines.append("release   anti-rollback counter unknown: installs are refused until "
                     "`{}` (or deploy --allow-downgrade)".format(commands.target_reset_counter()))  # fmt: skip
    else:
        lines.append("release   highest installed here: {}".format(st.get("highest_release", 0)))
    for e in st.get("downgrades", []):
        lines.append("downgrade {} (release {}) allowed at {}".format(e.get("version"), e.get("release"), e.get("at")))
    if st.get("state_error"):
        lines.append("state     {}".format(st["state_error"]))
    last = st.get("last")
    if last:
        lines.append("last      {} -> {} at {}".format(last.get("action"), last.get("version"), last.get("at")))
    return "\n".join(lines)
