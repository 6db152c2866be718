# Rules of the model stage.


def model_targets():
    """Files of this stage that 'rule all' asks for."""
    return []
