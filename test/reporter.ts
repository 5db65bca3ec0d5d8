// mocha's spec reporter plus one plain closing line, "tests: N passed, N failed, N skipped", which
// CI tooling reads without knowing mocha.

import Mocha from 'mocha'

export default class SpecWithSummary extends Mocha.reporters.Spec {
  constructor (runner: Mocha.Runner, options?: Mocha.MochaOptions) {
    super(runner, options)
    runner.once(Mocha.Runner.constants.EVENT_RUN_END, () => {
      const { passes, failures, pending } = runner.stats ?? { passes: 0, failures: 0, pending: 0 }
      process.stdout.write(`tests: ${passes} passed, ${failures} failed, ${pending} skipped\n`)
    })
  }
}
