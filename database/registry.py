"""Imports every entity's models so that Base.metadata knows all tables."""

from database.evaluations import models as evaluations  # noqa: F401
from database.models import models as model_configs  # noqa: F401
from database.organizations import models as organizations  # noqa: F401
from database.projects import models as projects  # noqa: F401
from database.projects import webhook_models as webhooks  # noqa: F401
from database.prompts import models as prompts  # noqa: F401
from database.results import models as results  # noqa: F401
from database.test_sets import models as test_sets  # noqa: F401
from database.tests import models as tests  # noqa: F401
from database.users import models as users  # noqa: F401
from tasks import models as jobs  # noqa: F401
