"""One line of a device check report (``edgetool doctor``): its name, PASS / FAIL / SKIP / INFO, and the detail."""

PASS, FAIL, SKIP, INFO = "PASS", "FAIL", "SKIP", "INFO"


class Check:
    def __init__(self, name: str, status: str, detail: str = ""):
        self.name, self.status, self.detail = name, status, detail
        self.labels = None  # the classify check's: {policy: [[superclass, class], ...]}, in --json

    def to_dict(self):
        out = {"check": self.name, "status": self.status, "detail": self.detail}
        if self.labels is not None:
            out["labels"] = self.labels
        return out
