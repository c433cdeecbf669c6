"""Imports every entity's models so that Base.metadata knows all tables."""

from database.organizations import models as organizations  # noqa: F401
from database.users import models as users  # noqa: F401
