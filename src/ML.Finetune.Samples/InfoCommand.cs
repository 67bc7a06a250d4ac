using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Samples;

/// <summary>`info`: proves the native stack loads and autograd works on this machine.</summary>
public static class InfoCommand
{
    public static int Run()
    {
        Console.WriteLine($"TorchSharp      {typeof(torch).Assembly.GetName().Version}");
        Console.WriteLine($"libtorch        {torch.__version__}");
        Console.WriteLine($"CUDA available  {torch.cuda.is_available()}");
        Console.WriteLine($"Device          {(torch.cuda.is_available() ? "cuda" : "cpu")}");
        Console.WriteLine($"Threads         {torch.get_num_threads()}");
        using var scope = torch.NewDisposeScope();
        // d/dx sum(x^2) = 2x: print the gradient at x = 1.5, which must be 3.
        var x = torch.tensor(new float[] { 1.5f }, requires_grad: true);
        (x * x).sum().backward();
        Console.WriteLine($"Autograd check  d(x^2)/dx at x=1.5 = {x.grad!.item<float>()}");
        return 0;
    }
}
