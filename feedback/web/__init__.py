"""The web layer: the FastAPI app, its server, dependencies and guards, schemas, routers, templates and static files.

Routers call the service layer (feedback.labelling.service.FeedbackService), never the store's queries
(they use its types: Status, NEITHER, TrainingRun)."""
