"""Where the admin pages live, for the parts of the app that treat them apart."""

PREFIX = "/admin"

