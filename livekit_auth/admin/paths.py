"""Where the admin pages live, for the parts of the app that treat them apart."""

PREFIX = "/admin"


def is_admin_path(path: str) -> bool:
    """Tell whether a path belongs to the admin pages, matched to a view or not."""
    return path == PREFIX or path.startswith(PREFIX + "/")
