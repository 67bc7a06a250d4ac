using System.Diagnostics;
using ML.Finetune.Models;
using ML.Finetune.Samples.Experiment;
using ML.Finetune.Tokenization;

namespace ML.Finetune.Samples;

/// <summary>`research`: quick pretrain → finetune θ_p and θ_0 → held-out accuracy, for iterating on the setup.</summary>
public static class ResearchCommand
{
    public static int Run(string[] a)
    {
        string Arg(string n, string d) { int i = Array.IndexOf(a, n); return i >= 0 ? a[i + 1] : d; }
        var facts = FactCorpus.Load(Arg("--facts", Path.Combine(AppContext.BaseDirectory, "Data", "universities.tsv")));
        var po = new PretrainOptions
        {
            Steps = int.Parse(Arg("--steps", "2000")), HiddenSize = int.Parse(Arg("--d", "128")), Layers = int.Parse(Arg("--layers", "4")),
            IntermediateSize = int.Parse(Arg("--ff", "384")), CityTemplates = int.Parse(Arg("--templates", "99")), QaFormat = Arg("--qa", "1") == "1",
            LearningRate = double.Parse(Arg("--lr", "2e-3")), Seed = int.Parse(Arg("--seed", "1")),
        };
        string folder = Arg("--model", Path.Combine(Path.GetTempPath(), "mlft-research-model"));
        if (Arg("--skip-pretrain", "0") != "1")
        {
            var (_, el) = Pretrainer.Run(facts, po, folder, (s, l) => { if (s % int.Parse(Arg("--every", "250")) == 0) Console.WriteLine($"pretrain step {s} loss {l:F3} {DateTime.Now:HH:mm:ss.ff}"); });
            Console.WriteLine($"pretrain {el.TotalSeconds:F0}s");
        }
        var tok = CausalLMTokenizer.FromFolder(folder);
        var text = new LmText(tok);
        var train = QaBuilder.Build(facts, "train");
        var test = QaBuilder.Build(facts, "test");
        var ftData = train.Select(p => text.PromptCompletion(p.Prompt, p.Completion)).ToList();
        int ftSteps = int.Parse(Arg("--ft-steps", "150"));
        double ftLr = double.Parse(Arg("--ft-lr", "3e-4"));
        foreach (var which in new[] { "p", "0" })
        {
            var sw = Stopwatch.StartNew();
            var model = which == "p" ? CausalLMFactory.LoadPretrained(folder) : CausalLMFactory.CreateRandom(CausalLMConfig.Load(folder), 7);
            var before = Evaluator.ExactMatch(model, text, test).Accuracy;
            FinetuneMethods.Get("full").Run(new MethodContext(model, model, text, ftData, [], ftSteps, ftLr, 3, null));
            var (te, rows) = Evaluator.ExactMatch(model, text, test);
            var tr = Evaluator.ExactMatch(model, text, train).Accuracy;
            Console.WriteLine($"theta_{which}: before {before:P0} test {te:P1} train {tr:P1} ({sw.Elapsed.TotalSeconds:F0}s)");
            foreach (var r in rows.Take(4)) Console.WriteLine($"   {r.Pair.Prompt} -> '{r.Got}' (want {r.Pair.Answer})");
        }
        return 0;
    }
}
