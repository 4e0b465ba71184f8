"""The one shape of "this input is wrong": a message per bad field."""


class InvalidInput(ValueError):
    """Bad input; ``errors`` maps each bad field to its message."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{field}: {msg}" for field, msg in errors.items()))
