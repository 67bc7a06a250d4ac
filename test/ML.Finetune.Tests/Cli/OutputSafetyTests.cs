using ML.Finetune.Samples.Cli;
using ML.Finetune.Samples.Experiment;
using ML.Finetune.Tests.Estimators;

namespace ML.Finetune.Tests.Cli;

/// <summary>
/// A command never deletes or overwrites what it did not write: --out is checked against the inputs (real paths) and
/// against what it holds; --overwrite replaces only this command's outputs; a save that does not finish leaves the old
/// outputs and no temporary folders.
/// </summary>
public class OutputSafetyTests : IDisposable
{
    readonly string _dir = Fixtures.TempDir();
    public void Dispose() { try { Directory.Delete(_dir, true); } catch (IOException) { } }

    const string OverwriteHint = "(use --overwrite to replace this command's own outputs)";

    static string[] Finetune(string model, string data, string outDir, string method = "lora", params string[] extra) =>
        ["finetune", "--model", model, "--data", data, "--method", method, "--steps", "2", "--out", outDir, .. extra];

    [Fact]
    public void A_foreign_non_empty_out_is_refused_and_overwrite_replaces_only_this_commands_outputs()
    {
        string data = CliRunner.WriteData(_dir);
        string outDir = Path.Combine(_dir, "results");
        Directory.CreateDirectory(Path.Combine(outDir, "sub"));
        File.WriteAllText(Path.Combine(outDir, "notes.txt"), "my notes");
        File.WriteAllText(Path.Combine(outDir, "sub", "keep.txt"), "keep");
        File.WriteAllText(Path.Combine(outDir, "model.zip"), "the user's own model.zip");
        var before = CliRunner.Snapshot(outDir);

        CliRunner.AssertError(CliRunner.InProcess(Finetune(TinyWordModel.Folder, data, outDir)), 2, "--out", "not empty", OverwriteHint);
        CliRunner.AssertUnchanged(before, outDir);

        var r = CliRunner.InProcess(Finetune(TinyWordModel.Folder, data, outDir, "lora", "--overwrite"));
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal("my notes", File.ReadAllText(Path.Combine(outDir, "notes.txt")));
        Assert.Equal("keep", File.ReadAllText(Path.Combine(outDir, "sub", "keep.txt")));
        Assert.NotEqual("the user's own model.zip", File.ReadAllText(Path.Combine(outDir, "model.zip"))); // named by the command: replaced, as asked
        Assert.True(File.Exists(Path.Combine(outDir, "adapter", "adapter_model.safetensors")));

        // Now the folder is this command's: a rerun needs no --overwrite; a full run replaces the lora run's outputs,
        // including its adapter/ (this command's own, listed in the manifest), and still keeps the user's files.
        r = CliRunner.InProcess(Finetune(TinyWordModel.Folder, data, outDir, "full"));
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.True(File.Exists(Path.Combine(outDir, "hf", "model.safetensors")));
        Assert.False(Directory.Exists(Path.Combine(outDir, "adapter")));
        Assert.Equal("my notes", File.ReadAllText(Path.Combine(outDir, "notes.txt")));
        Assert.Equal("keep", File.ReadAllText(Path.Combine(outDir, "sub", "keep.txt")));
        Assert.Empty(CliRunner.Debris(_dir));

        // A name the command writes that someone else put into its folder is not replaced silently either.
        Directory.CreateDirectory(Path.Combine(outDir, "adapter"));
        File.WriteAllText(Path.Combine(outDir, "adapter", "mine.txt"), "mine");
        CliRunner.AssertError(CliRunner.InProcess(Finetune(TinyWordModel.Folder, data, outDir, "lora")), 2, "adapter", OverwriteHint);
        Assert.Equal("mine", File.ReadAllText(Path.Combine(outDir, "adapter", "mine.txt")));
    }

    public static TheoryData<string> InputPlacements => new() { "model", "model/", "model/./", "sub/../model", "inside-model", "symlink-to-model", "parent-of-data", "data-file" };

    [Theory]
    [MemberData(nameof(InputPlacements))]
    public void An_out_that_is_inside_or_holds_an_input_is_refused_before_anything_is_written(string placement)
    {
        string model = TinyWordModel.Create(Directory.CreateDirectory(Path.Combine(_dir, "model")).FullName, seed: 7);
        Directory.CreateDirectory(Path.Combine(_dir, "sub"));
        string data = CliRunner.WriteData(Directory.CreateDirectory(Path.Combine(_dir, "data")).FullName);
        if (placement == "symlink-to-model") Directory.CreateSymbolicLink(Path.Combine(_dir, "link"), model);
        string outDir = placement switch
        {
            "inside-model" => Path.Combine(model, "out"),
            "symlink-to-model" => Path.Combine(_dir, "link"),
            "parent-of-data" => Path.Combine(_dir, "data"),
            "data-file" => data,
            _ => _dir + "/" + placement,
        };
        var before = CliRunner.Snapshot(_dir);
        var r = CliRunner.InProcess(Finetune(model, data, outDir, "full"));
        CliRunner.AssertError(r, 2, "--out", placement is "parent-of-data" or "data-file" ? "--data" : "--model");
        CliRunner.AssertUnchanged(before, _dir);
        Assert.False(Directory.Exists(Path.Combine(model, "out")));
    }

    [Fact]
    public void Out_dot_in_a_folder_holding_the_data_is_refused_as_a_child_process()
    {
        string data = CliRunner.WriteData(_dir);
        var before = CliRunner.Snapshot(_dir);
        var r = CliRunner.Child(_dir, Finetune(TinyWordModel.Folder, Path.GetFileName(data), "."));
        CliRunner.AssertError(r, 2, "--out .", "--data");
        CliRunner.AssertUnchanged(before, _dir);
    }

    [Fact]
    public void Pretrain_and_the_main_job_refuse_a_foreign_non_empty_out_too()
    {
        string outDir = Directory.CreateDirectory(Path.Combine(_dir, "x")).FullName;
        File.WriteAllText(Path.Combine(outDir, "config.json"), "{}");
        var before = CliRunner.Snapshot(outDir);
        CliRunner.AssertError(CliRunner.InProcess("pretrain", "--out", outDir, "--steps", "1"), 2, "not empty", OverwriteHint);
        CliRunner.AssertError(CliRunner.InProcess("--out", outDir, "--steps", "1", "--methods", "full", "--no-sweep"), 2, "not empty", OverwriteHint);
        CliRunner.AssertUnchanged(before, outDir);
        // The main job's default model may not hold its output either.
        CliRunner.AssertError(CliRunner.InProcess("--out", Path.Combine(Commands.DefaultModelFolder, "out")), 2, "--model");
    }

    [Fact]
    public void A_save_that_does_not_finish_leaves_the_old_outputs_and_no_temporary_folders()
    {
        string outDir = Path.Combine(_dir, "out");
        void Save(string text, bool commit)
        {
            using var folder = OutputFolder.Open("test", outDir, overwrite: false, ["a.txt"]);
            string staging = folder.NewStaging();
            File.WriteAllText(Path.Combine(staging, "a.txt"), text);
            if (commit) folder.Commit(); // else: cancelled (or failed) between writing and committing
        }
        Save("v1", commit: false);
        Assert.False(Directory.Exists(outDir)); // created by the command, nothing committed: removed again
        Save("v1", commit: true);
        Save("v2", commit: false);
        Assert.Equal("v1", File.ReadAllText(Path.Combine(outDir, "a.txt")));
        Assert.Empty(CliRunner.Debris(_dir));
        Save("v2", commit: true);
        Assert.Equal("v2", File.ReadAllText(Path.Combine(outDir, "a.txt")));
        Assert.Equal([OutputFolder.StateFolderName, "a.txt"], Directory.GetFileSystemEntries(outDir).Select(e => Path.GetFileName(e)!).Order(StringComparer.Ordinal).ToArray());
        Assert.Empty(CliRunner.Debris(_dir));
    }
}
