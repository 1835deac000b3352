"""Name -> entry tables of the registries (strategies, models, datasets): names ignore case, and a
name registered twice is a programming error."""

from utils.core.errors import UserError


class Registry(dict):
    """Entries by lower-cased name, for a kind of thing (``what``: "model", "dataset", ...)."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def add(self, name: str, entry) -> None:
        key = name.lower()
        if key in self:
            raise ValueError(f"{self.what} name {name!r} registered twice")
        self[key] = entry

    def find(self, name: str, choices: list):
        """The entry of ``name`` (any case); an unknown name stops with one line listing ``choices``."""
        key = str(name).lower()
        if key not in self:
            raise UserError(f"unknown {self.what} {name!r}; choose from {', '.join(choices)}")
        return self[key]
