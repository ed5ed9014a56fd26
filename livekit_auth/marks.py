"""What a view or a blueprint declares about itself, kept in a table beside it rather than on it.

The gate asks whether a view is public, the OpenAPI document what it takes and answers and
whether it is rate limited, the error handlers whether a blueprint renders its own error pages.
A decorator writes the answer here; a reader finds it through any decorators wrapped around the
view since (functools.wraps leaves __wrapped__).
"""

from typing import Generic, TypeVar

Mark = TypeVar("Mark")


class Marks(Generic[Mark]):
    """One kind of declaration, by the view or blueprint that made it."""

    def __init__(self) -> None:
        self.made: dict[object, Mark] = {}

    def put(self, target: object, mark: Mark) -> None:
        """Record a view's or a blueprint's declaration."""
        self.made[target] = mark

    def of(self, target: object) -> Mark | None:
        """The declaration of a view (or of one it wraps) or a blueprint; None if it made none."""
        while target is not None:
            mark = self.made.get(target)
            if mark is not None:
                return mark
            target = getattr(target, "__wrapped__", None)
        return None
