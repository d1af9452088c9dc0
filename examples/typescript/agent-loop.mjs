// An AI-agent style loop with @sandpit/sdk: the "model" proposes code, the agent writes it into
// a sandbox, runs the tests, reads the results, and feeds failures back until the tests pass.
// The model is a stand-in (a list of successive answers) so the example runs without an LLM.
//
//   SANDPIT_URL=http://127.0.0.1:7070 SANDPIT_KEY=sp_... node agent-loop.mjs

import { connect, getSandbox } from '@sandpit/sdk';

const TESTS = `import json, unittest
from solution import slugify

class SlugifyTest(unittest.TestCase):
    def test_lowercase(self):
        self.assertEqual(slugify("Hello World"), "hello-world")

    def test_punctuation(self):
        self.assertEqual(slugify("Ship it, now!"), "ship-it-now")

if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=0).result
    with open("report.json", "w") as f:
        json.dump({"run": result.testsRun, "failures": len(result.failures) + len(result.errors),
                   "details": [str(t[1]).splitlines()[-1] for t in result.failures + result.errors]}, f)
`;

/** Stand-in for an LLM: each call returns the next attempt, given the last test report. */
const attempts = [
  'def slugify(text):\n    return text.lower().replace(" ", "-")\n',
  'import re\n\ndef slugify(text):\n    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")\n',
];
function model(report) {
  if (report) console.log(`model: fixing ${report.failures} failure(s): ${report.details.join('; ')}`);
  return attempts.shift();
}

const sandbox = getSandbox(connect(), `agent-${Date.now().toString(36)}`, { sleepAfter: '5m' });
try {
  await sandbox.mkdir('/workspace/task', { recursive: true });
  await sandbox.writeFile('/workspace/task/test_solution.py', TESTS);
  let report;
  for (let round = 1; ; round++) {
    const code = model(report);
    if (code === undefined) throw new Error('the model ran out of ideas');
    await sandbox.writeFile('/workspace/task/solution.py', code);
    const run = await sandbox.exec('python3 test_solution.py', {
      cwd: '/workspace/task',
      timeout: 60_000,
      onStderr: (data) => process.stdout.write(`  | ${data}`),
    });
    report = JSON.parse((await sandbox.readFile('/workspace/task/report.json')).content);
    console.log(`round ${round}: exit ${run.exitCode}, ${report.run} tests, ${report.failures} failing`);
    if (report.failures === 0) {
      console.log(`PASS after ${round} round(s)`);
      break;
    }
  }
} finally {
  await sandbox.destroy();
}
