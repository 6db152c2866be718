# Planning speed (issue 13): Snakemake's signature inspection of the rules' functions, done once (the
# Snakefile calls this after its last rule). A file of its own: Snakemake's linter wants no functions
# beside rules, and its regular expression reads any line with the word rule, a space and later a colon as
# a rule (hence the loop variable `each`).


def inspect_rule_functions_once(rules):
    """Give every input, params and resource function of the rules its signature, computed once.

    Snakemake asks each such function for its parameters (inspect.signature) two or three times a job,
    to know whether it wants input, output, threads...: ~350,000 calls at 10,000 subjects, 5 % of
    `snakemake -n` (README, "Planning"). A function carrying them already (Snakemake's own
    overwrite_function_params, as its subpath() helper does) is not inspected again. The value is what
    Snakemake would compute, so nothing about the jobs changes. Call it after the last rule."""
    import inspect

    from snakemake.common import overwrite_function_params

    for each in rules:
        for item in [*each.input, *each.params]:
            func = getattr(item, "callable", None) or (item if callable(item) else None)
            if func is None:
                continue
            parameters = inspect.signature(func).parameters  # a bound method's: without self
            # a bound method (PLAN.qc_options) takes no attributes: its function does (one Plan per run)
            overwrite_function_params(getattr(func, "__func__", func), parameters)
    # Every job's resources go the same way: its threads and the default tmpdir through the bound method
    # Resource.evaluate (*args, **kwargs), tmpdir's and infer_batch's runtime also through their function:
    # ~5 signatures a job, 4 % more of `snakemake -n` at 10,000 subjects. These are Snakemake's objects
    # (a private attribute among them), so a version that changes them only loses the gain.
    try:
        from snakemake.resources import Resource

        evaluate = inspect.signature(Resource("_cores", 1).evaluate).parameters
        evaluators = {r._evaluator for each in rules for r in each.resources.values() if r.is_evaluable()}
    except (ImportError, AttributeError, TypeError):
        return
    overwrite_function_params(Resource.evaluate, evaluate)  # what Snakemake asks of every bound evaluate
    for func in evaluators:
        overwrite_function_params(func, inspect.signature(func).parameters)
