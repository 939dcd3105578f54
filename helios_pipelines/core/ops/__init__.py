"""The operations side of core: the store (the only SQL), alerts and episodes, feedback, plans, pushed samples."""
