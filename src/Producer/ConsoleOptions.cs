namespace LlmServing.Producer;

/// <summary>Settings of the operator's console at <c>/console</c> (section <c>Console</c>).</summary>
public sealed class ConsoleOptions
{
    public const string Section = "Console";

    /// <summary>
    /// RabbitMQ's management API, for the unacknowledged count of each lane (AMQP alone knows only ready messages and
    /// consumers). Empty: the console shows ready messages and consumers only.
    /// </summary>
    public string ManagementUrl { get; set; } = "http://guest:guest@127.0.0.1:15672/";

    /// <summary>The broker's virtual host of the job queues (for the management API).</summary>
    public string VirtualHost { get; set; } = "/";

    /// <summary>How long a console sign-in lasts.</summary>
    public TimeSpan SessionLifetime { get; set; } = TimeSpan.FromHours(8);

    /// <summary>How often pages with live parts refresh them (the only script the console has).</summary>
    public TimeSpan LiveRefresh { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// The host names (<c>host</c> or <c>host:port</c>) the console is reached by, for the cross-site check of form
    /// posts. IP literals and <c>localhost</c> are always accepted; any other name must be listed, so that a page on a
    /// name that was rebound to this address (DNS rebinding) cannot post to the console with a matching Origin.
    /// </summary>
    public string[] Hosts { get; set; } = [];

    /// <summary>Most dead letters listed per error queue.</summary>
    public int MaxDeadLetters { get; set; } = 100;
}
