"""MLflow naming and experiments, against a real MLflow store."""

from helios_pipelines.core.tracking import Tracker


def test_an_experiment_another_step_created_first_is_reused(tmp_path, monkeypatch):
    """The multiprocess executor runs a tenant's detector and candidates side by side; both may find
    no experiment and try to create it. The one that loses the race uses the winner's."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    winner = Tracker(uri).experiment_id("duel")
    loser = Tracker(uri)
    looked_up = []
    real_lookup = loser.client.get_experiment_by_name

    def lookup_racing_the_winner(name):
        looked_up.append(name)
        return None if len(looked_up) == 1 else real_lookup(name)  # the first look came before the winner's create

    monkeypatch.setattr(loser.client, "get_experiment_by_name", lookup_racing_the_winner)
    assert loser.experiment_id("duel") == winner
    assert looked_up == ["helios/duel", "helios/duel"]
