# Report: tables, figures, and the targets `tables` and `figures`.
#
# Two ways in, deliberately separate:
# - `snakemake` (rule all) reaches the render_* rules, whose inputs are the grid's result files:
#   they run after training, and their outputs are flagged for `snakemake --report`.
# - `snakemake tables` / `snakemake figures` are rules with neither input nor output: they always
#   re-render from whatever is under results/ and can never pull a prepare or train job into the
#   DAG (on a fresh clone with committed results they download, preprocess and train nothing).
# Render rules carry the config file, the training-code hash and the report-code hash as params,
# so a change of any of them re-renders (a result's staleness depends on all three).


rule render_tables:
    input:
        table1_and_experiment_tables,
    output:
        flagged_table_files("main"),
    params:
        config=CONFIG_FILE,
        code_hash=CODE_HASH,
        report_code=REPORT_CODE_HASH,
        results=RESULTS,
        out=dir_of_first_output,
    log:
        f"{LOGS}/report/tables.log",
    shell:
        "(python -m fedem.report tables --config {params.config} --results {params.results} "
        "--out {params.out}{README_STEP}) 2>&1 | tee {log}"


rule render_convergence:
    input:
        dataset_runs,
    output:
        pdf=f"{FIGURES}/convergence_{{dataset}}.pdf",
        png=report(f"{FIGURES}/convergence_{{dataset}}.png", caption="../report/convergence.rst",
                   category="Figures", subcategory="Convergence", labels={"dataset": "{dataset}"}),
    params:
        config=CONFIG_FILE,
        code_hash=CODE_HASH,
        report_code=REPORT_CODE_HASH,
        results=RESULTS,
        out=dir_of_first_output,
    log:
        f"{LOGS}/report/convergence_{{dataset}}.log",
    shell:
        "python -m fedem.report figures --kind convergence --dataset {wildcards.dataset} "
        "--config {params.config} --results {params.results} --out {params.out} 2>&1 | tee {log}"


rule render_experiment_tables:
    input:
        experiment_outputs,
    output:
        experiment_table_pattern(),
    params:
        config=CONFIG_FILE,
        code_hash=CODE_HASH,
        report_code=REPORT_CODE_HASH,
        results=RESULTS,
        out=dir_of_first_output,
    log:
        f"{LOGS}/report/tables_{{table_set}}.log",
    shell:
        "python -m fedem.report tables --set {wildcards.table_set} --config {params.config} "
        "--results {params.results} --out {params.out} 2>&1 | tee {log}"


rule render_sensitivity_figure:
    input:
        sensitivity_outputs,
    output:
        pdf=f"{FIGURES}/{layout.SENSITIVITY_FIGURE}.pdf",
        png=report(f"{FIGURES}/{layout.SENSITIVITY_FIGURE}.png", caption="../report/sensitivity.rst",
                   category="Figures", subcategory="Sensitivity", labels={"figure": "sensitivity"}),
    params:
        config=CONFIG_FILE,
        code_hash=CODE_HASH,
        report_code=REPORT_CODE_HASH,
        results=RESULTS,
        out=dir_of_first_output,
    log:
        f"{LOGS}/report/sensitivity.log",
    shell:
        "python -m fedem.report figures --kind sensitivity --config {params.config} --results {params.results} "
        "--out {params.out} 2>&1 | tee {log}"


rule render_tsne:
    input:
        dataset_probes,
    output:
        pdf=f"{FIGURES}/tsne_{{dataset}}.pdf",
        png=report(f"{FIGURES}/tsne_{{dataset}}.png", caption="../report/tsne.rst", category="Figures",
                   subcategory="t-SNE", labels={"dataset": "{dataset}"}),
    params:
        config=CONFIG_FILE,
        code_hash=CODE_HASH,
        report_code=REPORT_CODE_HASH,
        results=RESULTS,
        out=dir_of_first_output,
    log:
        f"{LOGS}/report/tsne_{{dataset}}.log",
    shell:
        "python -m fedem.report figures --kind tsne --dataset {wildcards.dataset} --config {params.config} "
        "--results {params.results} --out {params.out} 2>&1 | tee {log}"


# One target per experiment of the paper: `snakemake --cores 8 ablation` trains what that experiment
# lacks and renders its tables (and figures); nothing else.
rule ablation:
    input:
        targets_of("ablation"),


rule plugin:
    input:
        targets_of("plugin"),


rule ldp:
    input:
        targets_of("ldp"),


rule sensitivity:
    input:
        targets_of("sensitivity"),


rule tsne:
    input:
        targets_of("tsne"),


rule convergence:
    input:
        targets_of("convergence"),


rule render_probe_figures:
    input:
        dataset_probes,
    output:
        **flagged_probe_figures(),
    params:
        config=CONFIG_FILE,
        code_hash=CODE_HASH,
        report_code=REPORT_CODE_HASH,
        results=RESULTS,
        out=dir_of_first_output,
    log:
        f"{LOGS}/report/probes_{{dataset}}.log",
    shell:
        "python -m fedem.report figures --kind probes --dataset {wildcards.dataset} "
        "--config {params.config} --results {params.results} --out {params.out} 2>&1 | tee {log}"


rule render_protocol_gap:
    input:
        kept_runs,
    output:
        pdf=f"{FIGURES}/protocol_gap.pdf",
        png=report(f"{FIGURES}/protocol_gap.png", caption="../report/protocol_gap.rst", category="Figures",
                   subcategory="Protocol gap", labels={"figure": "protocol gap"}),
    params:
        config=CONFIG_FILE,
        code_hash=CODE_HASH,
        report_code=REPORT_CODE_HASH,
        results=RESULTS,
        out=dir_of_first_output,
    log:
        f"{LOGS}/report/protocol_gap.log",
    shell:
        "python -m fedem.report figures --kind protocol-gap "
        "--config {params.config} --results {params.results} --out {params.out} 2>&1 | tee {log}"


rule tables:
    params:
        config=CONFIG_FILE,
        results=RESULTS,
        out=TABLES,
    log:
        f"{LOGS}/report/tables.log",
    message:
        "tables from the result files under {params.results}/ (nothing is trained or prepared)"
    shell:
        "(python -m fedem.report tables --config {params.config} --results {params.results} --out {params.out}"
        "{README_STEP}) 2>&1 | tee {log}"


rule figures:
    params:
        config=CONFIG_FILE,
        results=RESULTS,
        out=FIGURES,
    log:
        f"{LOGS}/report/figures.log",
    message:
        "figures from the result files under {params.results}/ (nothing is trained or prepared)"
    shell:
        "python -m fedem.report figures --kind all --config {params.config} --results {params.results} "
        "--out {params.out} 2>&1 | tee {log}"


# Table 1 alone: `snakemake --cores 8 table1` trains what the grid (grid.methods, with their probe runs)
# lacks, none of the other experiments' variants, then re-renders every table from the results folder
# (the `tables` rule with Table 1's runs as its input).
use rule tables as table1 with:
    input:
        table1_outputs,
    message:
        "Table 1's runs are done; tables from the result files under {params.results}/"
