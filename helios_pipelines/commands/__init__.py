"""Sub-commands of ``helios``: every module here exposes ``command`` (a click command or group),
which ``helios_pipelines.cli`` mounts. Keep imports of heavy libraries inside the commands."""
