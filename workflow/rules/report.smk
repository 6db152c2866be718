# Rules of the report stage.


def report_targets():
    """Files of this stage that 'rule all' asks for."""
    return []
