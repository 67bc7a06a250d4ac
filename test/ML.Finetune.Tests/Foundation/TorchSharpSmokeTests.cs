using TorchSharp;
using static TorchSharp.torch;

namespace ML.Finetune.Tests.Foundation;

public class TorchSharpSmokeTests
{
    [Fact]
    public void SmallModule_ForwardBackwardAndOptimizerStep_MatchHandComputedValues()
    {
        using var scope = torch.NewDisposeScope();
        // y = w·x + b with w = [1, 2], b = 0.5; loss = (y - 3)^2 at x = [1, 1]: y = 3.5, loss = 0.25.
        var lin = nn.Linear(2, 1);
        using (torch.no_grad())
        {
            lin.weight!.copy_(torch.tensor(new float[,] { { 1f, 2f } }));
            lin.bias!.copy_(torch.tensor(new float[] { 0.5f }));
        }
        var x = torch.tensor(new float[,] { { 1f, 1f } });
        var loss = (lin.forward(x) - 3f).pow(2).sum();
        Assert.Equal(0.25f, loss.item<float>(), 6);
        loss.backward();
        // dloss/dw = 2(y-3)·x = [1, 1]; dloss/db = 1.
        Assert.Equal(new[] { 1f, 1f }, lin.weight!.grad!.data<float>().ToArray());
        Assert.Equal(1f, lin.bias!.grad!.item<float>());
        var opt = torch.optim.SGD(lin.parameters(), 0.1);
        opt.step();
        Assert.Equal(new[] { 0.9f, 1.9f }, lin.weight.data<float>().ToArray());
        Assert.Equal(0.4f, lin.bias.item<float>(), 6);
    }
}
