# FedEM reproducibility workflow.
#
#   snakemake --cores 8            prepare data, train every run of the grid, write tables and figures
#   snakemake tables               tables only, from the result files already under results/
#   snakemake figures              figures only, likewise
#   snakemake --cores 8 ablation   one experiment of the paper (also: plugin, ldp, sensitivity, tsne, convergence)
#   snakemake --report report.html an HTML report of the tables and figures (after a full run)
#   snakemake --cores 2 --configfile config/smoke.yaml config/smoke_workflow.yaml   the CI smoke grid
#
# The grid and every hyper-parameter: config/config.yaml (validated against
# src/fedem/config.schema.yaml). Where the workflow writes and what jobs ask for:
# config/workflow.yaml (validated against workflow/schemas/workflow.schema.yaml).

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"
configfile: "config/workflow.yaml"


include: "workflow/rules/common.smk"


wildcard_constraints:
    protocol=any_wildcard(PACKAGE_CONFIG["protocols"]),
    dataset=any_wildcard(DATASETS),
    method=any_wildcard(PACKAGE_CONFIG["methods"]),
    seed=r"\d+",
    variant=r"(dups|dedupe)-seed\d+-min\d+-neg\d+-v\d+",
    table_set=any_wildcard(EXPERIMENTS),


localrules:
    all,
    tables,
    figures,
    data_stats,
    render_tables,
    render_convergence,
    render_probe_figures,
    render_protocol_gap,
    render_experiment_tables,
    render_sensitivity_figure,
    render_tsne,
    table1,
    ablation,
    plugin,
    ldp,
    sensitivity,
    tsne,
    convergence,


rule all:
    default_target: True
    input:
        all_targets,


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"
