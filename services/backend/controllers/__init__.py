"""One controller per resource: trainings, jobs, models, workers, health."""

from services.backend.controllers.health import HealthController
from services.backend.controllers.jobs import JobController
from services.backend.controllers.models import ModelController
from services.backend.controllers.trainings import TrainingController
from services.backend.controllers.workers import WorkerController

CONTROLLERS = [TrainingController, JobController, ModelController, WorkerController,
               HealthController]

__all__ = ["CONTROLLERS", "HealthController", "JobController", "ModelController",
           "TrainingController", "WorkerController"]
