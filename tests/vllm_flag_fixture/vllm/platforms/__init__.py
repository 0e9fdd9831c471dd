class Platform:
    @classmethod
    def pre_register_and_update(cls, parser=None) -> None:
        """Out-of-tree platforms may update the parser here."""


def _resolve_current_platform() -> Platform:
    return Platform()


current_platform = _resolve_current_platform()
