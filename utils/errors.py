"""The one exception type for user mistakes: main_train prints its message and exits with code 2."""


class UserError(Exception):
    """A bad flag, file, field or combination. The message is one paragraph the user can act on."""
