using ML.Finetune.Estimators;
using ML.Finetune.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Samples;

/// <summary>`info`: proves the native stack loads and autograd works on this machine, and which compute dtype Auto picks here.</summary>
public static class InfoCommand
{
    public static int Run()
    {
        Console.WriteLine($"TorchSharp      {typeof(torch).Assembly.GetName().Version}");
        Console.WriteLine($"libtorch        {torch.__version__}");
        Console.WriteLine($"CUDA available  {torch.cuda.is_available()}");
        Console.WriteLine($"Device          {(torch.cuda.is_available() ? "cuda" : "cpu")}");
        Console.WriteLine($"Threads         {torch.get_num_threads()}");
        var cpu = CpuBf16Features.Detect();
        Console.WriteLine($"CPU bf16        AVX512_BF16 {(cpu.Avx512Bf16 ? "yes" : "no")}, AMX-BF16 {(cpu.AmxBf16 ? "yes" : "no")} ({cpu.Source})");
        var choice = AutoDType.Resolve(FinetuneDType.Auto, torch.cuda.is_available() ? torch.CUDA : torch.CPU);
        Console.WriteLine($"DType = Auto    {choice.DType}: {choice.Reason}");
        using var scope = torch.NewDisposeScope();
        // d/dx sum(x^2) = 2x: print the gradient at x = 1.5, which must be 3.
        var x = torch.tensor(new float[] { 1.5f }, requires_grad: true);
        (x * x).sum().backward();
        Console.WriteLine($"Autograd check  d(x^2)/dx at x=1.5 = {x.grad!.item<float>()}");
        return 0;
    }
}
