"""One line of a device check report (``edgetool doctor``): its name, PASS / FAIL / SKIP / INFO, and the detail."""

PASS, FAIL, SKIP, INFO = "PASS", "FAIL", "SKIP", "INFO"


class Check:
    def __init__(self, name: str, status: str, detail: str = ""):
        self.name, self.status, self.detail = name, status, detail

    def to_dict(self):
        return {"check": self.name, "status": self.status, "detail": self.detail}
